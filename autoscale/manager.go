// Package autoscale runs each database's PostgreSQL 14 instance: it
// provisions new instances, wakes them when a client needs them, suspends
// them after an idle period, and removes them with their database.
package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/catalog"
)

// Config holds the Manager's settings. Zero durations take the defaults
// given on each field.
type Config struct {
	// DataDir is sdblocal's data directory; instances live in
	// DataDir/instances/<database-id>.
	DataDir string
	// PGDir is the PostgreSQL 14 tree with bin/, lib/ and share/.
	PGDir string
	// IdleTimeout is how long an instance runs with no query before it is
	// suspended. Default 5m, as in the real service.
	IdleTimeout time.Duration
	// StartTimeout bounds one wake or provisioning start. Default 60s.
	StartTimeout time.Duration
	// StopTimeout bounds a fast shutdown before the instance is killed.
	// Default 60s.
	StopTimeout time.Duration
	// Scale is the CPU autoscaling rule; zero fields take its defaults.
	Scale ScaleConfig
	// Cgroups caps each instance's CPU at its allocation. Nil runs without
	// limits: CPU usage is then read from /proc and drives scaling and
	// metering all the same.
	Cgroups *CPUCgroups
	// StorageSampleInterval is how often each data directory's size is
	// measured for storage metering. Default 1m.
	StorageSampleInterval time.Duration
	// ClientLimit, when positive, replaces ClientLimit(cpu_max) as every
	// database's client connection limit.
	ClientLimit int
	// ColdStartDelay is added to every wake of a database that sets no
	// cold_start_delay of its own. Zero adds nothing.
	ColdStartDelay ColdStartDelay
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 60 * time.Second
	}
	c.Scale = c.Scale.withDefaults()
	if c.StorageSampleInterval <= 0 {
		c.StorageSampleInterval = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Manager owns every database's instance.
type Manager struct {
	cfg     Config
	cat     *catalog.Catalog
	metrics *metrics

	mu        sync.Mutex
	instances map[string]*Instance
	tasks     sync.WaitGroup // provisioning and removal in progress
	stop      chan struct{}
	loopDone  chan struct{}
	usageDone chan struct{}
	started   bool
	closeOnce sync.Once
}

// ErrNoInstance is returned for a database that has no instance (unknown,
// still being created, or deleted).
var ErrNoInstance = errors.New("database has no instance")

// NewManager returns a Manager for the databases in cat.
func NewManager(cfg Config, cat *catalog.Catalog) *Manager {
	cfg.setDefaults()
	m := &Manager{
		cfg:       cfg,
		cat:       cat,
		metrics:   newMetrics(cfg.Registerer),
		instances: map[string]*Instance{},
		stop:      make(chan struct{}),
		loopDone:  make(chan struct{}),
		usageDone: make(chan struct{}),
	}
	if cfg.Cgroups != nil {
		m.metrics.limitsEnforced.Set(1)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(newUsageCollector(m))
	}
	return m
}

// Start loads the catalog's databases and starts the idle loop. Databases
// left in creating are provisioned again, those left in deleting are
// removed, and those with cpu_min >= 1 are woken.
func (m *Manager) Start() error {
	var dbs []catalog.Database
	err := m.cat.View(func(tx *catalog.Tx) error {
		var err error
		dbs, err = tx.Databases(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("load databases: %w", err)
	}
	for _, db := range dbs {
		switch db.Status {
		case catalog.StatusCreating:
			m.Provision(db)
		case catalog.StatusDeleting:
			m.Remove(db.ID)
		default:
			inst := m.add(db)
			inst.setCPULimits(db.CPUMin, db.CPUMax)
		}
	}
	m.started = true
	go m.idleLoop()
	go m.usageLoop()
	return nil
}

func (m *Manager) add(db catalog.Database) *Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	inst := newInstance(m, db.ID, db.Name)
	m.instances[db.ID] = inst
	return inst
}

// Instance returns the instance of a database.
func (m *Manager) Instance(databaseID string) (*Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inst, ok := m.instances[databaseID]
	if !ok {
		return nil, fmt.Errorf("database %s: %w", databaseID, ErrNoInstance)
	}
	return inst, nil
}

// State returns whether the database's instance runs and its allocated
// vCPUs, which the scaling rule moves between cpu_min (at least 1) and
// cpu_max. A database without an instance reports not started and 0.
func (m *Manager) State(databaseID string) (started bool, cpuCurrent uint32) {
	inst, err := m.Instance(databaseID)
	if err != nil {
		return false, 0
	}
	return inst.Status()
}

// SetCPU applies changed cpu_min and cpu_max at once: cpu_min 1 or more
// wakes the instance and keeps it running, 0 lets it suspend when idle,
// and a running instance's allocation moves into the new range.
func (m *Manager) SetCPU(databaseID string, cpuMin, cpuMax uint32) {
	if inst, err := m.Instance(databaseID); err == nil {
		inst.setCPULimits(cpuMin, cpuMax)
	}
}

// Provision creates the database's instance in the background and sets its
// catalog status to ready, or to error with the reason.
func (m *Manager) Provision(db catalog.Database) {
	m.tasks.Add(1)
	go func() {
		defer m.tasks.Done()
		logger := m.cfg.Logger.With("database_id", db.ID)
		started := time.Now()
		l := newLayout(m.cfg.DataDir, db.ID)
		// A database left in creating by a killed sdblocal may still
		// have its initdb or first postmaster running.
		if stopped, err := stopProvisioningLeftovers(l, m.cfg.StopTimeout); err != nil {
			logger.Warn("processes of an earlier provisioning are still running", "error", err)
		} else if stopped {
			logger.Warn("killed the processes an earlier provisioning left running in the instance directory")
		}
		err := provision(context.Background(), m.cfg.PGDir, l, db.Name, m.cfg.StartTimeout)
		if err != nil {
			logger.Error("provisioning failed", "error", err, "duration", time.Since(started))
			if setErr := m.cat.SetDatabaseStatus(db.ID, catalog.StatusError, err.Error()); setErr != nil {
				logger.Error("record provisioning failure", "error", setErr)
			}
			return
		}
		inst := m.add(db)
		if err := m.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, ""); err != nil {
			// Deleted while being created: undo.
			logger.Warn("database vanished during provisioning; removing its instance", "error", err)
			m.Remove(db.ID)
			return
		}
		logger.Info("database provisioned", "name", db.Name, "duration", time.Since(started))
		inst.setCPULimits(db.CPUMin, db.CPUMax)
	}()
}

// Remove stops the database's instance, ends its clients' sessions, deletes
// its files and then its catalog record, in the background.
func (m *Manager) Remove(databaseID string) {
	m.tasks.Add(1)
	go func() {
		defer m.tasks.Done()
		logger := m.cfg.Logger.With("database_id", databaseID)
		m.mu.Lock()
		inst := m.instances[databaseID]
		m.mu.Unlock()
		if inst != nil {
			inst.shutdown(true, suspendDatabaseDeleted)
			if err := inst.layout.cgroup.remove(); err != nil {
				logger.Warn("remove CPU cgroup failed", "error", err)
			}
		}
		l := newLayout(m.cfg.DataDir, databaseID)
		if err := os.RemoveAll(l.dir); err != nil {
			logger.Error("delete instance files", "error", err)
			_ = m.cat.SetDatabaseStatus(databaseID, catalog.StatusError, err.Error())
			return
		}
		m.mu.Lock()
		delete(m.instances, databaseID)
		m.mu.Unlock()
		m.metrics.forget(databaseID)
		err := m.cat.Update(func(tx *catalog.Tx) error { return tx.DeleteDatabase(databaseID) })
		if err != nil && !errors.Is(err, catalog.ErrNotFound) {
			logger.Error("delete database record", "error", err)
			return
		}
		logger.Info("database deleted")
	}()
}

// checkInterval is how often the idle loop looks at every instance: a tenth
// of the idle timeout, between 10 ms and 1 s, so a suspend happens at most
// 10 % late.
func (m *Manager) checkInterval() time.Duration {
	return min(max(m.cfg.IdleTimeout/10, 10*time.Millisecond), time.Second)
}

func (m *Manager) idleLoop() {
	defer close(m.loopDone)
	ticker := time.NewTicker(m.checkInterval())
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-ticker.C:
			m.mu.Lock()
			instances := make([]*Instance, 0, len(m.instances))
			for _, inst := range m.instances {
				instances = append(instances, inst)
			}
			m.mu.Unlock()
			for _, inst := range instances {
				inst.suspendIfIdle(now, m.cfg.IdleTimeout)
			}
		}
	}
}

// WaitIdle waits until no instance has an active client, that is one
// between Begin and End, such as a client inside a query or a
// transaction, or until ctx ends. It returns nil when every instance is
// idle, and otherwise ctx's error and the number of clients still active.
// Clients may become active again as soon as it returns; a graceful
// shutdown stops accepting them first.
func (m *Manager) WaitIdle(ctx context.Context) (active int, err error) {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		active = m.activeClients()
		if active == 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return active, ctx.Err()
		case <-ticker.C:
		}
	}
}

// activeClients returns the number of clients between Begin and End,
// summed over every instance.
func (m *Manager) activeClients() int {
	total := 0
	for _, inst := range m.instanceList() {
		inst.mu.Lock()
		total += inst.active
		inst.mu.Unlock()
	}
	return total
}

// Close waits for provisioning and removals in progress, then stops every
// running instance with a fast shutdown. Later calls do nothing.
func (m *Manager) Close() {
	m.closeOnce.Do(m.close)
}

func (m *Manager) close() {
	close(m.stop)
	if m.started {
		<-m.loopDone
		<-m.usageDone
	}
	m.tasks.Wait()
	m.mu.Lock()
	instances := make([]*Instance, 0, len(m.instances))
	for _, inst := range m.instances {
		instances = append(instances, inst)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, inst := range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst.shutdown(false, suspendShutdown)
		}()
	}
	wg.Wait()
}
