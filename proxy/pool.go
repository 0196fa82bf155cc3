package proxy

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sdblocal/sdblocal/autoscale"
)

// poolKey selects the backends a client may use. Backends log in as one
// role without any client setting, so clients of the same role share them
// and get their startup parameters applied with set_config at checkout.
// Only a client whose options value holds more than -c and --name=value
// settings needs backends opened with that value, and gets its own key.
type poolKey struct {
	role    string
	options string
}

// Backend states, the state label of sdblocal_proxy_backend_connections.
const (
	// backendDialing: the connection is being opened; it counts against
	// the pool size already.
	backendDialing = iota
	// backendIdle: in the pool's idle list; no client owns it.
	backendIdle
	// backendActive: lent to a client.
	backendActive
	// backendResetting: running DISCARD ALL after its session-mode client
	// left; it joins the idle list when the reset ends.
	backendResetting
	// backendClosed: closed and no longer counted.
	backendClosed
)

// errWaitCanceled ends a wait for a wake or a backend that the client
// cancelled with a CancelRequest.
var errWaitCanceled = errors.New("wait canceled by a cancel request")

// dbPool holds the backends of one database's instance. All its backends
// belong to the same PostgreSQL instance and count against one size limit,
// whatever their key.
//
// The pool is an autoscale.Client of its instance: a suspend closes the
// idle backends, and the database's removal drops the pool.
//
// NOTE: idle backends have no idle timeout of their own. They stay open
// until the instance suspends, so a database with cpu_min >= 1 keeps up to
// its pool size of backends after a burst.
type dbPool struct {
	srv     *Server
	inst    *autoscale.Instance
	metrics *poolMetrics

	mu sync.Mutex
	// open counts the backends dialing, idle, active or resetting: those
	// that hold one of the instance's connection slots.
	open    int
	idle    []*backend // most recently released last
	waiters []*poolWaiter
	// limit and limitAt cache the pool size, which reads the instance's
	// cpu_current, for a second.
	limit   int
	limitAt time.Time
	closed  bool
	// logins are the results of logins by their settings (see
	// session.login).
	logins map[string]*loginResult
}

// poolWaiter is a client queued for a backend. The releasing side sends
// either a backend with the waiter's key, or nil: a slot the waiter fills
// by dialing.
type poolWaiter struct {
	key   poolKey
	grant chan *backend
}

func newPool(srv *Server, inst *autoscale.Instance) *dbPool {
	p := &dbPool{srv: srv, inst: inst, metrics: srv.metrics.forDatabase(inst.ID())}
	inst.Attach(p)
	return p
}

// poolRegistry holds the pools of the databases that had clients, and the
// settings that clients share.
type poolRegistry struct {
	// sessions counts the sessions past login.
	sessions atomic.Int64

	mu   sync.Mutex
	byDB map[string]*dbPool
	// settings interns the clients' settings at login (see
	// internSettings), so that thousands of clients with the same
	// driver share one map.
	settings map[string]map[string]string
}

func newPoolRegistry() *poolRegistry {
	return &poolRegistry{byDB: map[string]*dbPool{}, settings: map[string]map[string]string{}}
}

// pool returns the pool of inst's database, creating it on first use.
func (s *Server) pool(inst *autoscale.Instance) *dbPool {
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	p := s.pools.byDB[inst.ID()]
	if p == nil || p.inst != inst {
		p = newPool(s, inst)
		s.pools.byDB[inst.ID()] = p
	}
	return p
}

// size returns the number of backends the pool may hold now. mu must be
// held.
func (p *dbPool) sizeLocked(now time.Time) int {
	if now.Sub(p.limitAt) < time.Second && p.limit > 0 {
		return p.limit
	}
	cfg := p.srv.cfg
	size := cfg.PoolSize
	if size == 0 {
		if cfg.PoolMode == PoolSession {
			size = cfg.MaxBackendsPerDatabase
		} else {
			_, cpu := p.inst.Status()
			size = 10 * int(max(cpu, 1))
		}
	}
	p.limit = min(size, cfg.MaxBackendsPerDatabase)
	p.limitAt = now
	return p.limit
}

// checkout returns a backend with key for owner, from the idle list, by
// dialing, or after waiting for another client to release one. It waits
// at most QueryWaitTimeout; a NOTICE tells the client when the wait
// passes QueryWaitNotice. canceled ends the wait early.
func (p *dbPool) checkout(owner *session, key poolKey, canceled <-chan struct{}) (*backend, error) {
	start := time.Now()
	b, waiter, err := p.take(key, start)
	if err != nil {
		return nil, err
	}
	if b != nil {
		p.metrics.poolWait.Observe(time.Since(start).Seconds())
		return b, nil
	}
	if waiter == nil {
		// A free slot: dial into it.
		b, err = p.dial(owner, key)
		p.metrics.poolWait.Observe(time.Since(start).Seconds())
		return b, err
	}

	p.metrics.waiting.Inc()
	defer p.metrics.waiting.Dec()
	timeout := time.NewTimer(p.srv.cfg.QueryWaitTimeout)
	defer timeout.Stop()
	notice := time.NewTimer(p.srv.cfg.QueryWaitNotice)
	defer notice.Stop()
	for {
		select {
		case granted, ok := <-waiter.grant:
			p.metrics.poolWait.Observe(time.Since(start).Seconds())
			if !ok {
				return nil, fatalf(codeAdminShutdown, "terminating connection because database %s is being deleted", p.inst.ID())
			}
			if granted != nil {
				return granted, nil
			}
			return p.dial(owner, key)
		case <-notice.C:
			owner.sendNotice(fmtPoolWaitNotice(p.inst.ID(), time.Since(start), p.currentSize()))
		case <-timeout.C:
			if b, ok := p.abandon(waiter); ok {
				p.metrics.poolWait.Observe(time.Since(start).Seconds())
				return b, nil
			}
			p.metrics.poolWait.Observe(time.Since(start).Seconds())
			p.metrics.waitTimeouts.Inc()
			return nil, errorf(codeTooManyConnections, "no backend connection to database %s became free within %s: all %d are in use",
				p.inst.ID(), p.srv.cfg.QueryWaitTimeout, p.currentSize()).
				withHint("Keep transactions short, use fewer concurrent clients, raise cpu_max, or raise --pool-size or --query-wait-timeout.")
		case <-canceled:
			if b, ok := p.abandon(waiter); ok {
				// A backend arrived with the cancel; give it back.
				p.release(b)
			}
			return nil, errWaitCanceled
		}
	}
}

// take finds an idle backend with key, or reserves a slot to dial, or
// queues a waiter. A full pool whose idle backends all have other keys
// closes one of them to make room.
func (p *dbPool) take(key poolKey, now time.Time) (*backend, *poolWaiter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, fatalf(codeAdminShutdown, "terminating connection because database %s is being deleted", p.inst.ID())
	}
	for i := len(p.idle) - 1; i >= 0; i-- {
		if b := p.idle[i]; b.key == key {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.setStateLocked(b, backendActive)
			return b, nil, nil
		}
	}
	if p.open < p.sizeLocked(now) {
		p.open++
		return nil, nil, nil
	}
	if len(p.idle) > 0 {
		// The slot of the least recently used idle backend is reused.
		victim := p.idle[0]
		p.idle = p.idle[1:]
		p.setStateLocked(victim, backendClosed)
		go victim.close()
		return nil, nil, nil
	}
	w := &poolWaiter{key: key, grant: make(chan *backend, 1)}
	p.waiters = append(p.waiters, w)
	return nil, w, nil
}

// abandon removes a waiter that stops waiting. When a release already
// granted it something, it returns the backend granted, or gives up the
// slot granted.
func (p *dbPool) abandon(w *poolWaiter) (*backend, bool) {
	p.mu.Lock()
	for i, queued := range p.waiters {
		if queued == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return nil, false
		}
	}
	p.mu.Unlock()
	granted, ok := <-w.grant
	if !ok {
		return nil, false
	}
	if granted != nil {
		return granted, true
	}
	// A slot was granted: pass it on.
	p.mu.Lock()
	p.open--
	p.grantSlotLocked()
	p.mu.Unlock()
	return nil, false
}

// dial opens a backend in a slot reserved by take. While the instance
// runs crash recovery (after one of its backends died) it answers 57P03;
// dial retries then, so the client sees a slower query, not an error.
func (p *dbPool) dial(owner *session, key poolKey) (*backend, error) {
	ctx, cancel := p.srv.wakeContext()
	defer cancel()
	for {
		b, err := dialBackend(ctx, p, key)
		if err == nil {
			p.mu.Lock()
			p.metrics.backends[backendActive].Inc()
			b.state = backendActive
			p.mu.Unlock()
			owner.logger.Debug("backend connection opened", "backend_pid", b.pid)
			go b.readLoop()
			return b, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == codeCannotConnectNow && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.open--
		p.grantSlotLocked()
		p.mu.Unlock()
		if errors.As(err, &pgErr) {
			return nil, fromPgError(pgErr)
		}
		return nil, fatalf(codeConnectionFailure, "could not connect to database %s: %v", p.inst.ID(), err)
	}
}

// release takes back a backend whose client is done with it: ReadyForQuery
// with status idle has arrived and nothing is pending. In session mode it
// is reset with DISCARD ALL first. A backend with a CancelRequest in
// flight waits for it, so the cancel cannot reach the backend's next
// client.
func (p *dbPool) release(b *backend) {
	b.mu.Lock()
	b.owner = nil
	if b.cancels > 0 {
		b.releaseAfterCancel = true
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	if p.srv.cfg.PoolMode == PoolSession {
		p.mu.Lock()
		p.setStateLocked(b, backendResetting)
		p.mu.Unlock()
		if !b.reset(func() { p.putIdle(b) }) {
			p.discard(b)
		}
		return
	}
	p.putIdle(b)
}

// putIdle hands b to the first waiter with its key, or to the idle list.
// A pool over its size closes b instead, and a waiter with another key
// gets b's slot to dial into.
func (p *dbPool) putIdle(b *backend) {
	p.mu.Lock()
	if b.state == backendClosed {
		p.mu.Unlock()
		return
	}
	if p.closed || b.broken() || p.open > p.sizeLocked(time.Now()) {
		p.mu.Unlock()
		p.discard(b)
		return
	}
	for i, w := range p.waiters {
		if w.key == b.key {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.setStateLocked(b, backendActive)
			p.mu.Unlock()
			w.grant <- b
			return
		}
	}
	if len(p.waiters) > 0 {
		p.mu.Unlock()
		p.discard(b)
		return
	}
	p.setStateLocked(b, backendIdle)
	p.idle = append(p.idle, b)
	p.mu.Unlock()
}

// discard closes b and frees its slot for a waiter. It may be called more
// than once.
func (p *dbPool) discard(b *backend) {
	p.mu.Lock()
	if b.state == backendClosed {
		p.mu.Unlock()
		return
	}
	if b.state == backendIdle {
		for i, idle := range p.idle {
			if idle == b {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
	}
	p.setStateLocked(b, backendClosed)
	p.open--
	p.grantSlotLocked()
	p.mu.Unlock()
	b.close()
}

// grantSlotLocked gives a free slot, if any, to the first waiter. mu must
// be held.
func (p *dbPool) grantSlotLocked() {
	if len(p.waiters) == 0 || p.open >= p.sizeLocked(time.Now()) {
		return
	}
	w := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.open++
	w.grant <- nil
}

// setStateLocked moves b to state and keeps the backend gauges in step.
// mu must be held.
func (p *dbPool) setStateLocked(b *backend, state int) {
	if b.state == state {
		return
	}
	if b.state != backendDialing {
		p.metrics.backends[b.state].Dec()
	}
	if state != backendClosed {
		p.metrics.backends[state].Inc()
	}
	b.state = state
}

func (p *dbPool) currentSize() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sizeLocked(time.Now())
}

// DetachBackend closes the idle backends before the instance suspends.
// Backends lent to clients are detached by their sessions. The login
// results are dropped too, so that settings changed with ALTER ROLE or
// ALTER DATABASE reach the logins after the next wake.
func (p *dbPool) DetachBackend() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.logins = nil
	for _, b := range idle {
		p.setStateLocked(b, backendClosed)
		p.open--
	}
	p.limitAt = time.Time{}
	p.mu.Unlock()
	for _, b := range idle {
		b.close()
	}
}

// Terminate drops the pool when its database is being deleted or taken for
// maintenance (a restore): the instance terminates the sessions one by one,
// and later sessions get a new pool.
func (p *dbPool) Terminate(string, string) {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	for _, b := range idle {
		p.setStateLocked(b, backendClosed)
		p.open--
	}
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	for _, b := range idle {
		b.close()
	}
	for _, w := range waiters {
		close(w.grant)
	}
	p.inst.Detach(p)
	p.srv.pools.mu.Lock()
	if p.srv.pools.byDB[p.inst.ID()] == p {
		delete(p.srv.pools.byDB, p.inst.ID())
	}
	p.srv.pools.mu.Unlock()
	p.srv.metrics.forgetDatabase(p.inst.ID())
}
