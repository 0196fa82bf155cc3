package autoscale

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU limits through Linux control groups.
//
// Every running instance gets the cgroup <hierarchy>/sdblocal/<database-id>,
// and its CFS bandwidth quota is the instance's allocation: cpu_current
// vCPUs of CPU time per period. A wake creates the cgroup and a suspend
// removes it.
//
// sdblocal creates the sdblocal directory while it is still root and gives
// it to the service user. After dropping privileges it creates, limits and
// removes the per-instance children itself, because the kernel gives a new
// cgroup's control files to the user that creates it. On cgroup v1 the
// process that moves a PID into a cgroup must also run as the PID's owner,
// which is the case because the postmaster runs as the service user.
//
// Cgroup v1 keeps CPU accounting in a separate controller (cpuacct), which
// may be mounted with cpu or on its own hierarchy. When it is on its own,
// each instance gets a cgroup in both hierarchies.

type cgroupVersion int

const (
	cgroupV1 cgroupVersion = 1
	cgroupV2 cgroupVersion = 2
)

// cgroupSubtree is the directory sdblocal owns below each hierarchy's
// mount point.
const cgroupSubtree = "sdblocal"

// cgroupServiceLeaf, on cgroup v2 only, is the leaf under the subtree that
// holds sdblocal itself. Cgroup v2 lets an unprivileged process move a PID
// only between cgroups whose common ancestor's cgroup.procs it may write,
// so sdblocal has to live inside the subtree it manages. It cannot live in
// the subtree's root, because a cgroup that hands the cpu controller to
// its children may hold no processes itself.
const cgroupServiceLeaf = "service"

// cfsPeriodMicros is the CFS bandwidth period, 100 ms, the kernel's
// default. The quota per period is the allocation in vCPUs times this.
const cfsPeriodMicros = 100000

// CPUCgroups is sdblocal's subtree in the cgroup hierarchy that holds the
// cpu controller. A nil *CPUCgroups means CPU limits are not enforced.
type CPUCgroups struct {
	version cgroupVersion
	// cpuDir is <cpu hierarchy>/sdblocal on v1 or <cgroup2 mount>/sdblocal
	// on v2.
	cpuDir string
	// acctDir is, on v1, <cpuacct hierarchy>/sdblocal: equal to cpuDir when
	// cpu and cpuacct share a hierarchy, empty when no cpuacct hierarchy is
	// mounted. Unused on v2, where cpu.stat holds the usage.
	acctDir string
}

// String names the hierarchy for logs, for example "cgroup v1
// /sys/fs/cgroup/cpu/sdblocal".
func (c *CPUCgroups) String() string {
	return fmt.Sprintf("cgroup v%d %s", c.version, c.cpuDir)
}

// dirs returns the subtree's directories, one per hierarchy used.
func (c *CPUCgroups) dirs() []string {
	if c.acctDir == "" || c.acctDir == c.cpuDir {
		return []string{c.cpuDir}
	}
	return []string{c.cpuDir, c.acctDir}
}

// mountEntry is one line of /proc/self/mountinfo, reduced to what cgroup
// detection needs.
type mountEntry struct {
	point        string
	fsType       string
	superOptions []string
}

// parseMountinfo reads the format of proc(5): fields 1 to 6, optional
// fields, a "-" separator, then the filesystem type, source and super
// options.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var mounts []mountEntry
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+4 {
			return nil, fmt.Errorf("malformed mountinfo line %q", scanner.Text())
		}
		mounts = append(mounts, mountEntry{
			point:        unescapeMountPath(fields[4]),
			fsType:       fields[sep+1],
			superOptions: strings.Split(fields[sep+3], ","),
		})
	}
	return mounts, scanner.Err()
}

// unescapeMountPath undoes the octal escapes (\040 for a space) that the
// kernel writes for whitespace and backslashes in mount paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// detectCPUCgroups picks the hierarchy that holds the cpu controller. A v1
// cpu hierarchy wins over a cgroup2 mount, because on hybrid systems the
// cgroup2 mount cannot have the cpu controller while v1 holds it.
// readFile reads a cgroup2 mount's cgroup.controllers.
func detectCPUCgroups(mounts []mountEntry, readFile func(string) ([]byte, error)) (*CPUCgroups, error) {
	var cpuMount, acctMount, v2Mount string
	for _, m := range mounts {
		switch m.fsType {
		case "cgroup":
			if cpuMount == "" && slices.Contains(m.superOptions, "cpu") {
				cpuMount = m.point
			}
			if acctMount == "" && slices.Contains(m.superOptions, "cpuacct") {
				acctMount = m.point
			}
		case "cgroup2":
			if v2Mount != "" {
				continue
			}
			raw, err := readFile(filepath.Join(m.point, "cgroup.controllers"))
			if err == nil && slices.Contains(strings.Fields(string(raw)), "cpu") {
				v2Mount = m.point
			}
		}
	}
	switch {
	case cpuMount != "":
		c := &CPUCgroups{version: cgroupV1, cpuDir: filepath.Join(cpuMount, cgroupSubtree)}
		if acctMount != "" {
			c.acctDir = filepath.Join(acctMount, cgroupSubtree)
		}
		return c, nil
	case v2Mount != "":
		return &CPUCgroups{version: cgroupV2, cpuDir: filepath.Join(v2Mount, cgroupSubtree)}, nil
	}
	return nil, errors.New("no cgroup hierarchy with the cpu controller is mounted")
}

// SetUpCPUCgroups finds the hierarchy holding the cpu controller and
// creates sdblocal's subtree in it. Called as root with the service user,
// it gives the subtree to that user, and on cgroup v2 moves sdblocal into
// the subtree's service leaf. Called with a nil owner, it expects an
// administrator to have prepared the subtree the same way. Call Check
// after dropping privileges: only then is it known whether the service
// user can use the subtree.
func SetUpCPUCgroups(owner *ServiceUser) (*CPUCgroups, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	c, err := detectCPUCgroups(mounts, os.ReadFile)
	if err != nil {
		return nil, err
	}
	if owner == nil {
		return c, nil
	}
	if c.version == cgroupV1 {
		err = c.setUpV1(*owner)
	} else {
		err = c.setUpV2(*owner)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// setUpV1 creates the subtree in each hierarchy and gives the directories
// to the owner. Writing the directory is enough: the control files of the
// children the owner creates belong to the owner (checked as the postgres
// user on a Linux 6.18 v1 hybrid host).
func (c *CPUCgroups) setUpV1(owner ServiceUser) error {
	for _, dir := range c.dirs() {
		if err := mkdirExisting(dir); err != nil {
			return err
		}
		if err := os.Chown(dir, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("chown %s to %s: %w", dir, owner.Name, err)
		}
	}
	return nil
}

// setUpV2 enables the cpu controller down to the subtree, moves this
// process into the service leaf and delegates the subtree to the owner the
// way cgroups(7) describes delegation: the directory and its cgroup.procs,
// cgroup.threads and cgroup.subtree_control files.
//
// NOTE: this path has run only in unit tests on a fake tree, because the
// development hosts bind the cpu controller to v1.
func (c *CPUCgroups) setUpV2(owner ServiceUser) error {
	mount := filepath.Dir(c.cpuDir)
	if err := enableController(mount, "cpu"); err != nil {
		return err
	}
	leaf := filepath.Join(c.cpuDir, cgroupServiceLeaf)
	if err := mkdirExisting(c.cpuDir); err != nil {
		return err
	}
	if err := mkdirExisting(leaf); err != nil {
		return err
	}
	if err := writeCgroupFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return err
	}
	if err := enableController(c.cpuDir, "cpu"); err != nil {
		return err
	}
	for _, name := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
		path := filepath.Join(c.cpuDir, name)
		if err := os.Chown(path, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("chown %s to %s: %w", path, owner.Name, err)
		}
	}
	return nil
}

// enableController adds controller to dir's cgroup.subtree_control unless
// it is there already.
func enableController(dir, controller string) error {
	path := filepath.Join(dir, "cgroup.subtree_control")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if slices.Contains(strings.Fields(string(raw)), controller) {
		return nil
	}
	return writeCgroupFile(path, "+"+controller)
}

// Check proves that this process can use the subtree: it creates and
// removes a probe cgroup, and on cgroup v2 checks that this process lives
// inside the subtree. Run it after dropping privileges.
func (c *CPUCgroups) Check() error {
	if c.version == cgroupV2 {
		own, err := ownCgroupV2()
		if err != nil {
			return err
		}
		mount := filepath.Dir(c.cpuDir)
		if !strings.HasPrefix(filepath.Join(mount, own)+"/", c.cpuDir+"/") {
			return fmt.Errorf("sdblocal runs in cgroup %s, outside %s: start sdblocal as root so it can move itself there", own, c.cpuDir)
		}
	}
	probe := c.instance(fmt.Sprintf("probe-%d", os.Getpid()))
	if err := probe.create(); err != nil {
		return err
	}
	if err := probe.setLimit(1); err != nil {
		_ = probe.remove()
		return err
	}
	return probe.remove()
}

// ownCgroupV2 returns this process's cgroup v2 path from /proc/self/cgroup.
func ownCgroupV2() (string, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", errors.New("read own cgroup: /proc/self/cgroup has no cgroup v2 entry")
}

// instanceCgroup is the cgroup of one instance. The methods a spawn calls
// accept a nil receiver, which stands for "CPU limits not enforced".
type instanceCgroup struct {
	c    *CPUCgroups
	name string // the database ID
}

// instance returns the cgroup for the database id, or nil when c is nil.
func (c *CPUCgroups) instance(id string) *instanceCgroup {
	if c == nil {
		return nil
	}
	return &instanceCgroup{c: c, name: id}
}

func (g *instanceCgroup) cpuDir() string { return filepath.Join(g.c.cpuDir, g.name) }

func (g *instanceCgroup) dirs() []string {
	var dirs []string
	for _, dir := range g.c.dirs() {
		dirs = append(dirs, filepath.Join(dir, g.name))
	}
	return dirs
}

// create makes the cgroup in every hierarchy. An existing cgroup, left
// when a stop could not remove it, is reused.
func (g *instanceCgroup) create() error {
	for _, dir := range g.dirs() {
		if err := mkdirExisting(dir); err != nil {
			return err
		}
	}
	if g.c.version == cgroupV1 {
		return writeCgroupFile(filepath.Join(g.cpuDir(), "cpu.cfs_period_us"), strconv.Itoa(cfsPeriodMicros))
	}
	return nil
}

// setLimit sets the CPU quota to vcpus whole CPUs. 0 lifts the limit.
func (g *instanceCgroup) setLimit(vcpus uint32) error {
	quota := int64(vcpus) * cfsPeriodMicros
	if g.c.version == cgroupV1 {
		value := "-1"
		if vcpus > 0 {
			value = strconv.FormatInt(quota, 10)
		}
		return writeCgroupFile(filepath.Join(g.cpuDir(), "cpu.cfs_quota_us"), value)
	}
	value := "max"
	if vcpus > 0 {
		value = strconv.FormatInt(quota, 10)
	}
	return writeCgroupFile(filepath.Join(g.cpuDir(), "cpu.max"), value+" "+strconv.Itoa(cfsPeriodMicros))
}

// prepareSpawn readies the cgroup for a postmaster about to start: it
// creates the cgroup and lifts its limit, because start-up under a quota is
// slower. One start on a 2-vCPU host took 45.7 ms under half a CPU against
// about 16 ms without a limit. The allocation's quota is set once the
// instance is ready. On cgroup v2 it also sets attr so the postmaster
// starts inside the cgroup; the returned function closes the directory
// descriptor that uses, after cmd.Start. A nil receiver does nothing.
func (g *instanceCgroup) prepareSpawn(attr *syscall.SysProcAttr) (done func(), err error) {
	done = func() {}
	if g == nil {
		return done, nil
	}
	if err := g.create(); err != nil {
		return done, err
	}
	if err := g.setLimit(0); err != nil {
		return done, err
	}
	if g.c.version != cgroupV2 {
		return done, nil
	}
	dir, err := g.openDir()
	if err != nil {
		return done, err
	}
	attr.UseCgroupFD, attr.CgroupFD = true, int(dir.Fd())
	return func() { dir.Close() }, nil
}

// placeStarted moves a just-started postmaster into the cgroup on v1,
// where no fork-time placement exists. The postmaster forks its first
// children only after loading its libraries and configuration, so they
// normally inherit the cgroup; adoptProcessGroup moves any that were
// faster. On v2 the postmaster already starts inside the cgroup. A nil
// receiver does nothing.
func (g *instanceCgroup) placeStarted(pid int) error {
	if g == nil || g.c.version == cgroupV2 {
		return nil
	}
	return g.addProcess(pid)
}

// addProcess moves pid into the cgroup in every hierarchy. Its children
// forked afterwards inherit the cgroup.
func (g *instanceCgroup) addProcess(pid int) error {
	for _, dir := range g.dirs() {
		if err := writeCgroupFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// adoptProcessGroup moves every live process of the process group pgid
// into the cgroup. It catches children forked before the postmaster itself
// was moved. A process that exits meanwhile is skipped, and a nil receiver
// does nothing.
func (g *instanceCgroup) adoptProcessGroup(pgid int) error {
	if g == nil {
		return nil
	}
	pids, err := processGroupMembers(pgid)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := g.addProcess(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

// accounts reports whether the cgroup measures its CPU usage.
func (g *instanceCgroup) accounts() bool {
	return g != nil && (g.c.version == cgroupV2 || g.c.acctDir != "")
}

// usage returns the CPU time used by the cgroup's processes since it was
// created. It returns an error wrapping fs.ErrNotExist when the cgroup
// does not exist.
func (g *instanceCgroup) usage() (time.Duration, error) {
	if g.c.version == cgroupV1 {
		path := filepath.Join(g.c.acctDir, g.name, "cpuacct.usage")
		raw, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", path, err)
		}
		return time.Duration(ns), nil
	}
	path := filepath.Join(g.cpuDir(), "cpu.stat")
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if value, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", path, err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("%s has no usage_usec line", path)
}

// openDir opens the cgroup v2 directory for SysProcAttr.CgroupFD, which
// starts a child directly inside it (clone3 with CLONE_INTO_CGROUP).
func (g *instanceCgroup) openDir() (*os.File, error) {
	f, err := os.Open(g.cpuDir())
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", g.cpuDir(), err)
	}
	return f, nil
}

// remove deletes the cgroup. It fails with EBUSY while a process is
// still inside. A cgroup that does not exist, or a nil receiver, counts as
// removed.
func (g *instanceCgroup) remove() error {
	if g == nil {
		return nil
	}
	for _, dir := range g.dirs() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// mkdirExisting creates dir and accepts one that already exists.
func mkdirExisting(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return nil
}

// writeCgroupFile writes value in a single write(2), as cgroup control
// files expect. The kernel ignores O_TRUNC on them; it matters only for the
// ordinary files of the tests' fake trees.
func writeCgroupFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write([]byte(value))
	closeErr := f.Close()
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	if closeErr != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, closeErr)
	}
	return nil
}
