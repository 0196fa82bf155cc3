package autoscale

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Usage is one database's metered consumption since Since.
type Usage struct {
	// ProvisionedVCPUSeconds is the allocation (cpu_current) integrated
	// over time, the compute quantity the real service bills. A suspended
	// instance adds nothing.
	ProvisionedVCPUSeconds float64
	// CPUSeconds is the CPU time used by the instance's processes.
	CPUSeconds float64
	// StorageByteSeconds is StorageBytes integrated over time, suspended or
	// not, sampled every Config.StorageSampleInterval.
	StorageByteSeconds float64
	// StorageBytes is the data directory's size at the last sample.
	StorageBytes int64
	// Since is when this sdblocal process started metering the database.
	// The counters live in memory and start again at zero after a restart.
	Since time.Time
}

// meter accumulates one instance's usage. The instance guards it with its
// mutex.
type meter struct {
	since time.Time

	allocSince  time.Time // when the allocation last changed
	vcpuSeconds float64   // closed segments of the allocation integral

	cpu cpuMeter
	// proc and counted serve the /proc fallback: proc is the postmaster
	// whose process group is read, counted the last postmaster whose final
	// CPU time was added.
	proc, counted *postmaster
	sampleErr     bool // a failed cgroup read was logged; later ones are not

	storageBytes int64
	storageAt    time.Time // zero until the first storage sample
	byteSeconds  float64
}

// startMeter begins metering at now. A cgroup left by an earlier run of
// sdblocal still carries that run's usage, so its reading at the start is
// the baseline. A missing cgroup is a baseline of zero.
func (i *Instance) startMeter(now time.Time) {
	i.meter.since, i.meter.allocSince = now, now
	if cg := i.layout.cgroup; cg.accounts() {
		reading, err := cg.usage()
		if err != nil {
			reading = 0
		}
		i.meter.cpu = cpuMeter{source: cgroupSource, last: reading}
	}
}

// allocate closes the segment of the previous allocation at now.
func (mt *meter) allocate(now time.Time, previous uint32) {
	mt.vcpuSeconds += float64(previous) * now.Sub(mt.allocSince).Seconds()
	mt.allocSince = now
}

// recordStorage adds the storage integral up to now and keeps bytes as the
// current size. The first sample also covers the time since metering
// started, on the assumption that the size did not change meanwhile.
func (mt *meter) recordStorage(now time.Time, bytes int64) {
	if mt.storageAt.IsZero() {
		mt.byteSeconds += float64(bytes) * now.Sub(mt.since).Seconds()
	} else {
		mt.byteSeconds += float64(mt.storageBytes) * now.Sub(mt.storageAt).Seconds()
	}
	mt.storageBytes, mt.storageAt = bytes, now
}

// usage returns the totals at now, with the open segments up to now
// included, so successive calls never decrease.
func (mt *meter) usage(now time.Time, current uint32) Usage {
	u := Usage{
		ProvisionedVCPUSeconds: mt.vcpuSeconds + float64(current)*now.Sub(mt.allocSince).Seconds(),
		CPUSeconds:             mt.cpu.total.Seconds(),
		StorageByteSeconds:     mt.byteSeconds,
		StorageBytes:           mt.storageBytes,
		Since:                  mt.since,
	}
	if !mt.storageAt.IsZero() {
		u.StorageByteSeconds += float64(mt.storageBytes) * now.Sub(mt.storageAt).Seconds()
	}
	return u
}

// cgroupSource names the cgroup's usage counter as a cpuMeter source.
const cgroupSource = "cgroup"

// postmasterSource names a postmaster's process group as a cpuMeter source.
func postmasterSource(pid int) string { return "postmaster " + strconv.Itoa(pid) }

// cpuMeter turns cumulative CPU readings into a total. Readings come from
// one source at a time: the instance's cgroup, or the process group of its
// current postmaster when no cgroup measures it.
type cpuMeter struct {
	source string
	last   time.Duration
	total  time.Duration
}

// add folds in a cumulative reading. A new source counts in full, because
// every source belongs to this instance from its start: a postmaster's
// process group from its wake, and a cgroup from the baseline taken by
// startMeter. A reading below the last one is skipped, because a /proc
// sum drops for one round when the postmaster reaps a child between the
// reads of its own line and the child's.
func (c *cpuMeter) add(source string, reading time.Duration) {
	switch {
	case source != c.source:
		c.total += reading
	case reading > c.last:
		c.total += reading - c.last
	default:
		return
	}
	c.source, c.last = source, reading
}

// sampleCPU folds the instance's CPU usage at now into its meter. While the
// instance runs, it also gives the scaler a sample and applies the step
// the scaler returns. processGroups returns the CPU time of every process
// group, read from /proc once per round and only when an instance needs it.
func (i *Instance) sampleCPU(now time.Time, processGroups func() map[int]time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if cg := i.layout.cgroup; cg.accounts() {
		reading, err := cg.usage()
		switch {
		case err == nil:
			i.meter.cpu.add(cgroupSource, reading)
		case errors.Is(err, fs.ErrNotExist):
			// Created at the first wake.
		case !i.meter.sampleErr:
			i.meter.sampleErr = true
			i.logger.Error("read CPU usage from the cgroup failed; later failures are not logged", "error", err)
		}
	} else {
		i.sampleProcessGroupLocked(processGroups)
	}

	if i.state != StateRunning {
		return
	}
	next, used := i.scaler.observe(now, i.meter.cpu.total, i.cpuCurrent, i.cpuMin, i.cpuMax)
	if next != i.cpuCurrent {
		i.scaleLocked(now, next, used, i.scaler.scaleReason(next > i.cpuCurrent))
	}
}

// releaseCgroupLocked removes the cgroup of an instance whose postmaster
// has stopped, so that no cgroup outlives its use; the next wake creates
// it again. The cgroup's CPU time is folded into the meter first, because
// the new cgroup counts from zero. A cgroup that still holds processes
// stays and is reused. mu must be held.
func (i *Instance) releaseCgroupLocked() {
	cg := i.layout.cgroup
	if cg == nil {
		return
	}
	if cg.accounts() {
		if reading, err := cg.usage(); err == nil {
			i.meter.cpu.add(cgroupSource, reading)
		}
	}
	if err := cg.remove(); err != nil {
		i.logger.Warn("remove CPU cgroup of the stopped instance failed; the next wake reuses it", "error", err)
		return
	}
	if cg.accounts() {
		i.meter.cpu.source, i.meter.cpu.last = cgroupSource, 0
	}
}

// sampleProcessGroupLocked measures the instance without a cgroup: the CPU
// time of the live processes in the postmaster's process group, plus the
// time of the children the postmaster has reaped. Once the postmaster has
// exited, its wait status holds the final figure, because Linux's wait4
// reports the usage of the process and of every child it reaped. Only the
// time of children the postmaster never reaps, which happens when it is
// killed, is lost. mu must be held.
func (i *Instance) sampleProcessGroupLocked(processGroups func() map[int]time.Duration) {
	for {
		p := i.meter.proc
		if p == nil {
			if i.proc == nil || i.proc == i.meter.counted {
				return
			}
			i.meter.proc = i.proc
			continue
		}
		select {
		case <-p.exited:
			if ps := p.cmd.ProcessState; ps != nil {
				i.meter.cpu.add(postmasterSource(p.pid), ps.UserTime()+ps.SystemTime())
			}
			i.meter.proc, i.meter.counted = nil, p
			continue
		default:
		}
		if cpu, ok := processGroups()[p.pid]; ok {
			i.meter.cpu.add(postmasterSource(p.pid), cpu)
		}
		return
	}
}

// sampleStorage measures the data directory and adds to the storage
// integral, when the last sample is older than interval or there is none
// yet. The walk runs without the instance's mutex.
func (i *Instance) sampleStorage(now time.Time, interval time.Duration) {
	i.mu.Lock()
	due := i.meter.storageAt.IsZero() || now.Sub(i.meter.storageAt) >= interval
	i.mu.Unlock()
	if !due {
		return
	}
	size, err := dirSize(i.layout.data)
	if err != nil {
		i.logger.Warn("measure data directory failed", "error", err)
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.meter.recordStorage(now, size)
}

// Usage returns the instance's metered usage up to now.
func (i *Instance) Usage() Usage {
	return i.snapshot().usage
}

// Usage returns a database's metered usage.
func (m *Manager) Usage(databaseID string) (Usage, error) {
	inst, err := m.Instance(databaseID)
	if err != nil {
		return Usage{}, err
	}
	return inst.Usage(), nil
}

// dirSize returns the apparent size of the regular files under dir, as
// du --apparent-size counts it. For a data directory that includes the WAL
// and PostgreSQL's own catalogs besides the tables. Files that vanish
// during the walk, such as temporary files, are skipped.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		total += info.Size()
		return nil
	})
	return total, err
}

// usageLoop samples every instance's CPU usage each Scale.Interval, which
// also drives scaling, and its data directory's size each
// StorageSampleInterval, starting at the instance's first round.
func (m *Manager) usageLoop() {
	defer close(m.usageDone)
	ticker := time.NewTicker(m.cfg.Scale.Interval)
	defer ticker.Stop()
	for {
		var now time.Time
		select {
		case <-m.stop:
			return
		case now = <-ticker.C:
		}
		instances := m.instanceList()
		var groups map[int]time.Duration
		processGroups := func() map[int]time.Duration {
			if groups == nil {
				var err error
				if groups, err = processGroupCPU(); err != nil {
					m.cfg.Logger.Error("read CPU usage from /proc failed", "error", err)
					groups = map[int]time.Duration{}
				}
			}
			return groups
		}
		for _, inst := range instances {
			inst.sampleCPU(now, processGroups)
		}
		for _, inst := range instances {
			inst.sampleStorage(now, m.cfg.StorageSampleInterval)
		}
	}
}

// instanceList returns the current instances.
func (m *Manager) instanceList() []*Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	instances := make([]*Instance, 0, len(m.instances))
	for _, inst := range m.instances {
		instances = append(instances, inst)
	}
	return instances
}

// usageCollector exports every database's usage and state at scrape
// time, so the counters include the current allocation up to the scrape
// and a deleted database's series disappear with it.
type usageCollector struct {
	m                                     *Manager
	provisioned, cpu, storage, cpuCurrent *prometheus.Desc
	started, cpuMin, cpuMax, storageBytes *prometheus.Desc
}

func newUsageCollector(m *Manager) *usageCollector {
	labels := []string{"database_id"}
	return &usageCollector{
		m: m,
		provisioned: prometheus.NewDesc("sdblocal_database_provisioned_vcpu_seconds_total",
			"Allocated vCPUs integrated over time while the instance runs (the billed compute), since sdblocal started.", labels, nil),
		cpu: prometheus.NewDesc("sdblocal_database_cpu_seconds_total",
			"CPU time used by the instance's processes, since sdblocal started.", labels, nil),
		storage: prometheus.NewDesc("sdblocal_database_storage_byte_seconds_total",
			"Data directory size integrated over time, suspended or not, since sdblocal started.", labels, nil),
		cpuCurrent: prometheus.NewDesc("sdblocal_database_cpu_current",
			"vCPUs allocated to the instance now (cpu_current); 0 while suspended.", labels, nil),
		started: prometheus.NewDesc("sdblocal_database_started",
			"1 while the database's instance runs and accepts backend connections (the API's started), 0 otherwise.", labels, nil),
		cpuMin: prometheus.NewDesc("sdblocal_database_cpu_min",
			"The database's cpu_min in vCPUs; 1 or more keeps the instance running.", labels, nil),
		cpuMax: prometheus.NewDesc("sdblocal_database_cpu_max",
			"The database's cpu_max in vCPUs, the most the scaling rule allocates.", labels, nil),
		storageBytes: prometheus.NewDesc("sdblocal_database_storage_bytes",
			"Size of the database's data directory at the last storage sample (--storage-sample-interval); 0 before the first.", labels, nil),
	}
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.provisioned
	ch <- c.cpu
	ch <- c.storage
	ch <- c.cpuCurrent
	ch <- c.started
	ch <- c.cpuMin
	ch <- c.cpuMax
	ch <- c.storageBytes
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	for _, inst := range c.m.instanceList() {
		st := inst.snapshot()
		started := 0.0
		if st.started {
			started = 1
		}
		ch <- prometheus.MustNewConstMetric(c.provisioned, prometheus.CounterValue, st.usage.ProvisionedVCPUSeconds, inst.id)
		ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, st.usage.CPUSeconds, inst.id)
		ch <- prometheus.MustNewConstMetric(c.storage, prometheus.CounterValue, st.usage.StorageByteSeconds, inst.id)
		ch <- prometheus.MustNewConstMetric(c.cpuCurrent, prometheus.GaugeValue, float64(st.cpuCurrent), inst.id)
		ch <- prometheus.MustNewConstMetric(c.started, prometheus.GaugeValue, started, inst.id)
		ch <- prometheus.MustNewConstMetric(c.cpuMin, prometheus.GaugeValue, float64(st.cpuMin), inst.id)
		ch <- prometheus.MustNewConstMetric(c.cpuMax, prometheus.GaugeValue, float64(st.cpuMax), inst.id)
		ch <- prometheus.MustNewConstMetric(c.storageBytes, prometheus.GaugeValue, float64(st.usage.StorageBytes), inst.id)
	}
}

// instanceSnapshot is an instance's state and usage read at one moment.
type instanceSnapshot struct {
	usage                      Usage
	started                    bool
	cpuCurrent, cpuMin, cpuMax uint32
}

func (i *Instance) snapshot() instanceSnapshot {
	i.mu.Lock()
	defer i.mu.Unlock()
	return instanceSnapshot{
		usage:      i.meter.usage(time.Now(), i.cpuCurrent),
		started:    i.state == StateRunning,
		cpuCurrent: i.cpuCurrent,
		cpuMin:     i.cpuMin,
		cpuMax:     i.cpuMax,
	}
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat: USER_HZ,
// which sysconf(_SC_CLK_TCK) reports as 100 on amd64 and arm64 Linux.
const clockTick = 10 * time.Millisecond

// processGroupCPU returns, for every process group, the CPU time of its
// live members plus that of the children its leader has reaped.
func processGroupCPU() (map[int]time.Duration, error) {
	groups := map[int]time.Duration{}
	err := scanProcStats(func(pid int, st procStat) {
		ticks := st.utime + st.stime
		if pid == st.pgrp {
			ticks += st.cutime + st.cstime
		}
		groups[st.pgrp] += time.Duration(ticks) * clockTick
	})
	return groups, err
}

// processGroupMembers returns the PIDs whose process group is pgid, read
// from /proc.
func processGroupMembers(pgid int) ([]int, error) {
	var pids []int
	err := scanProcStats(func(pid int, st procStat) {
		if st.pgrp == pgid {
			pids = append(pids, pid)
		}
	})
	return pids, err
}

// procStat holds the fields of /proc/<pid>/stat that sdblocal uses.
type procStat struct {
	pgrp           int
	utime, stime   uint64 // clock ticks used by the process
	cutime, cstime uint64 // clock ticks of its reaped children
}

// parseProcStat parses /proc/<pid>/stat. The command name, field 2, is in
// parentheses and may contain spaces and parentheses, so the fields are
// counted from the last ')'.
func parseProcStat(raw []byte) (procStat, error) {
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return procStat{}, errors.New("no command name")
	}
	// fields[0] is field 3 (state), so field n is fields[n-3].
	fields := strings.Fields(string(raw[end+1:]))
	if len(fields) < 15 {
		return procStat{}, fmt.Errorf("%d fields after the command name, want at least 15", len(fields))
	}
	var st procStat
	var err error
	parse := func(n int) uint64 {
		v, perr := strconv.ParseUint(fields[n-3], 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("field %d: %w", n, perr)
		}
		return v
	}
	st.pgrp = int(parse(5))
	st.utime, st.stime, st.cutime, st.cstime = parse(14), parse(15), parse(16), parse(17)
	return st, err
}

// scanProcStats calls fn for every process in /proc. Processes that exit
// during the scan are skipped.
func scanProcStats(fn func(pid int, st procStat)) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseProcStat(raw)
		if err != nil {
			continue
		}
		fn(pid, st)
	}
	return nil
}
