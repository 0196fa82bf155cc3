package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// State is an instance's lifecycle state.
//
// Transitions, all made under Instance.mu by setState:
//
//	stopped  -> starting   a client calls Begin, or cpu_min >= 1 keeps it up
//	failed   -> starting   a later Begin retries a failed wake
//	starting -> running    postmaster ready and a backend connection succeeded
//	starting -> failed     the postmaster exited or timed out during start-up
//	running  -> stopping   idle for the idle timeout with no client active, or shutdown
//	running  -> stopped    the postmaster exited on its own (crash, kill)
//	stopping -> stopped    the postmaster exited after the fast shutdown
//
// Clients may hold backend connections only in running. In starting and
// stopping, Begin waits for the next state.
type State int

const (
	// StateStopped: no postmaster runs; the data directory is shut down
	// cleanly or awaits crash recovery at the next wake.
	StateStopped State = iota
	// StateStarting: a postmaster was spawned and is not yet ready.
	StateStarting
	// StateRunning: the postmaster accepts backend connections.
	StateRunning
	// StateStopping: a fast shutdown was requested; idle clients' backends
	// have been detached.
	StateStopping
	// StateFailed: the last wake failed, and lastErr contains the cause.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateStopping:
		return "stopping"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Client is a proxy session that may hold a backend connection to an
// instance. The instance calls it to take the backend away before a
// suspend, and to end the session when the database is removed.
type Client interface {
	// DetachBackend closes the client's backend connection, if any,
	// without ending the client's session. The instance calls it only
	// while no client is active, so the client is between queries.
	DetachBackend()
	// Terminate ends the client's session with a FATAL error.
	Terminate(sqlstate, message string)
}

// ErrRemoved is returned by Begin once the database is being deleted.
var ErrRemoved = errors.New("database is being deleted")

// Instance is the PostgreSQL server of one database and its lifecycle. It
// is safe for concurrent use.
type Instance struct {
	id     string
	dbName string
	layout layout
	m      *Manager
	logger *slog.Logger

	mu         sync.Mutex
	state      State
	changed    chan struct{} // closed and replaced at every transition
	proc       *postmaster   // set in starting (after spawn), running and stopping
	attempt    uint64        // counts wakes, so waiters can tell their wake failed
	lastErr    error         // why the last wake failed
	active     int           // clients between Begin and End
	lastActive time.Time     // when the last client became active or idle
	cpuMin     uint32        // the database's cpu_min; >= 1 keeps it awake
	cpuMax     uint32        // the database's cpu_max; caps cpuCurrent
	cpuCurrent uint32        // vCPUs allocated: from cpuMin (at least 1) to cpuMax in running, 0 otherwise
	scaler     scaler        // applies the scaling rule while running
	meter      meter         // usage since this sdblocal process started
	removed    bool          // Remove was called; Begin returns ErrRemoved
	removing   chan struct{} // closed with removed set, to cut a cold-start delay short
	exclusive  error         // set by TakeExclusive until Release; Begin returns it
	clients    map[Client]struct{}
	wakeStart  time.Time
}

func newInstance(m *Manager, id, dbName string) *Instance {
	i := &Instance{
		id:         id,
		dbName:     dbName,
		layout:     newLayout(m.cfg.DataDir, id),
		m:          m,
		logger:     m.cfg.Logger.With("database_id", id),
		changed:    make(chan struct{}),
		removing:   make(chan struct{}),
		lastActive: time.Now(),
		clients:    map[Client]struct{}{},
		scaler:     newScaler(m.cfg.Scale),
	}
	i.layout.cgroup = m.cfg.Cgroups.instance(id)
	i.startMeter(i.lastActive)
	return i
}

// ID returns the database ID the instance serves.
func (i *Instance) ID() string { return i.id }

// DatabaseName returns the PostgreSQL database name inside the instance.
func (i *Instance) DatabaseName() string { return i.dbName }

// SocketDir returns the directory holding the instance's Unix socket.
func (i *Instance) SocketDir() string { return i.layout.dir }

// SocketPort returns the port number in the socket's file name.
func (i *Instance) SocketPort() uint16 { return socketPort }

// State returns the current lifecycle state.
func (i *Instance) State() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state
}

// setState must be called with mu held.
func (i *Instance) setState(s State) {
	i.state = s
	close(i.changed)
	i.changed = make(chan struct{})
}

// Begin marks a client active, waking the instance first when it is not
// running. Until the matching End, the instance does not suspend. Concurrent
// calls on a suspended instance cause exactly one wake. Begin returns the
// error of a wake it waited for, ErrRemoved after Remove, an error wrapping
// ErrExclusive while TakeExclusive holds the instance, or ctx's error.
func (i *Instance) Begin(ctx context.Context) error {
	var waitedAttempt uint64
	waited := false
	for {
		i.mu.Lock()
		if i.removed {
			i.mu.Unlock()
			return ErrRemoved
		}
		if i.exclusive != nil {
			err := i.exclusive
			i.mu.Unlock()
			return err
		}
		switch i.state {
		case StateRunning:
			i.active++
			i.lastActive = time.Now()
			i.mu.Unlock()
			return nil
		case StateFailed:
			if waited && i.attempt == waitedAttempt {
				err := i.lastErr
				i.mu.Unlock()
				return err
			}
			i.startWakeLocked()
		case StateStopped:
			i.startWakeLocked()
		}
		if i.state == StateStarting {
			waited, waitedAttempt = true, i.attempt
		}
		changed := i.changed
		i.mu.Unlock()

		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// End marks a client idle again. Every successful Begin needs one End.
func (i *Instance) End() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.active <= 0 {
		i.logger.Error("instance: End without Begin")
		return
	}
	i.active--
	i.lastActive = time.Now()
}

// Attach registers a client so a suspend can detach its backend.
func (i *Instance) Attach(c Client) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.clients[c] = struct{}{}
}

// Detach forgets a client whose session ended.
func (i *Instance) Detach(c Client) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.clients, c)
}

// Running reports whether the postmaster is up.
func (i *Instance) Running() bool { return i.State() == StateRunning }

// startWakeLocked moves to starting and spawns the postmaster in the
// background. mu must be held.
func (i *Instance) startWakeLocked() {
	i.attempt++
	i.wakeStart = time.Now()
	i.setState(StateStarting)
	go i.wake(i.attempt)
}

// wake waits out the cold-start delay, if any, and then starts the
// postmaster. The delay comes first and outside StartTimeout, so it
// cannot make the start time out, and clients wait in Begin through both.
func (i *Instance) wake(attempt uint64) {
	delay := i.coldStartDelay().draw()
	if delay > 0 {
		i.logger.Debug("instance waking after a cold-start delay", "cold_start_delay", delay, "attempt", attempt)
	}
	err := i.waitColdStart(delay)
	var proc *postmaster
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), i.m.cfg.StartTimeout)
		proc, err = i.startUpgraded(ctx)
		cancel()
	}
	duration := time.Since(i.wakeStart)

	i.mu.Lock()
	defer i.mu.Unlock()
	if err != nil {
		i.lastErr = fmt.Errorf("wake database %s: %w", i.id, err)
		i.setState(StateFailed)
		if errors.Is(err, errWakeAborted) {
			i.logger.Info("wake aborted during the cold-start delay", "duration", duration, "attempt", attempt)
			return
		}
		i.m.metrics.wakeFailures.WithLabelValues(i.id).Inc()
		i.logger.Error("wake failed", "duration", duration, "attempt", attempt, "error", err)
		return
	}
	i.proc = proc
	i.lastActive = time.Now()
	i.scaler.reset()
	i.allocateLocked(i.lastActive, clampAllocation(0, i.cpuMin, i.cpuMax))
	i.setState(StateRunning)
	i.m.metrics.wakes.WithLabelValues(i.id).Inc()
	i.m.metrics.wakeSeconds.Observe(duration.Seconds())
	i.m.metrics.wakeSecondsSum.WithLabelValues(i.id).Add(duration.Seconds())
	if delay > 0 {
		i.m.metrics.coldStartDelay.WithLabelValues(i.id).Add(delay.Seconds())
	}
	i.m.metrics.running.Inc()
	i.logger.Info("instance woke", "pid", proc.pid, "duration", duration, "cold_start_delay", delay, "attempt", attempt)
	go i.watch(proc)
}

// watch notices a postmaster that exits while running, without a suspend.
func (i *Instance) watch(proc *postmaster) {
	<-proc.exited
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc != proc || i.state != StateRunning {
		return
	}
	i.proc = nil
	i.allocateLocked(time.Now(), 0)
	i.setState(StateStopped)
	i.m.metrics.running.Dec()
	i.m.metrics.unexpectedExits.WithLabelValues(i.id).Inc()
	i.logger.Error("instance exited unexpectedly; the next client wakes it", "pid", proc.pid, "error", proc.exitErr)
}

// suspendIfIdle suspends the instance when it runs, no client is active,
// cpu_min is 0 and the last activity is older than idle.
func (i *Instance) suspendIfIdle(now time.Time, idle time.Duration) {
	i.mu.Lock()
	if i.state != StateRunning || i.active > 0 || i.cpuMin >= 1 || i.removed || now.Sub(i.lastActive) < idle {
		i.mu.Unlock()
		return
	}
	i.stopLocked(suspendIdleTimeout, true)
}

// stopLocked detaches idle clients and shuts the postmaster down. It is
// entered with mu held in state running and returns with mu released.
// reason is one of the suspend* constants.
func (i *Instance) stopLocked(reason string, detach bool) {
	proc := i.proc
	idleFor := time.Since(i.lastActive)
	i.allocateLocked(time.Now(), 0)
	i.setState(StateStopping)
	clients := make([]Client, 0, len(i.clients))
	for c := range i.clients {
		clients = append(clients, c)
	}
	i.mu.Unlock()

	// Closing idle backends before the shutdown keeps PostgreSQL from
	// sending them "terminating connection due to administrator command";
	// the clients stay connected to the proxy and reconnect on their next
	// query.
	if detach {
		for _, c := range clients {
			c.DetachBackend()
		}
	}
	started := time.Now()
	err := proc.stop(i.m.cfg.StopTimeout)

	i.mu.Lock()
	defer i.mu.Unlock()
	i.proc = nil
	i.releaseCgroupLocked()
	i.setState(StateStopped)
	i.m.metrics.running.Dec()
	i.m.metrics.suspends.WithLabelValues(i.id, reason).Inc()
	if err != nil {
		i.logger.Error("suspend failed to stop postgres cleanly", "reason", reason, "pid", proc.pid, "error", err)
		return
	}
	i.logger.Info("instance suspended", "reason", reason, "pid", proc.pid, "idle_for", idleFor.Round(time.Millisecond), "duration", time.Since(started))
}

// setCPULimits records the database's cpu_min and cpu_max. A running
// instance whose allocation falls outside them is scaled into them at
// once, and cpu_min >= 1 wakes a suspended one.
func (i *Instance) setCPULimits(cpuMin, cpuMax uint32) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.cpuMin, i.cpuMax = cpuMin, cpuMax
	if want := clampAllocation(i.cpuCurrent, cpuMin, cpuMax); i.state == StateRunning && want != i.cpuCurrent {
		i.scaleLocked(time.Now(), want, i.scaler.lastUsed, fmt.Sprintf("cpu_min %d, cpu_max %d", cpuMin, cpuMax))
	}
	if cpuMin >= 1 && !i.removed && (i.state == StateStopped || i.state == StateFailed) {
		i.startWakeLocked()
	}
}

// shutdown stops a running instance and waits for any wake in progress, for
// sdblocal's own exit or the database's removal. After it returns with
// remove set, Begin fails with ErrRemoved. reason is one of the suspend*
// constants.
func (i *Instance) shutdown(remove bool, reason string) {
	i.mu.Lock()
	if remove && !i.removed {
		i.removed = true
		close(i.removing)
	}
	for i.state == StateStarting || i.state == StateStopping {
		changed := i.changed
		i.mu.Unlock()
		<-changed
		i.mu.Lock()
	}
	if remove {
		for c := range i.clients {
			go c.Terminate("57P01", fmt.Sprintf("terminating connection because database %s is being deleted", i.id))
		}
	}
	if i.state != StateRunning {
		i.mu.Unlock()
		return
	}
	// A removal has just terminated every client; a shutdown of sdblocal
	// detaches the idle ones so their sessions end cleanly.
	i.stopLocked(reason, !remove)
}

// Status returns whether the instance runs and the vCPUs allocated to it:
// 0 while suspended, and from max(cpu_min, 1) to cpu_max while running,
// as the scaling rule sets it.
func (i *Instance) Status() (started bool, cpuCurrent uint32) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state == StateRunning, i.cpuCurrent
}
