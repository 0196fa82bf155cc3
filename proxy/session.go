package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sdblocal/sdblocal/autoscale"
)

// maxMessage is the largest message the relay forwards, PostgreSQL's
// PQ_LARGE_MESSAGE_LIMIT (1 GiB - 1): the server would reject more anyway.
const maxMessage = 1<<30 - 1

// maxRequestBytes is the largest Query or Parse a client may send, the
// real service's 1,024 KB request limit. A longer one fails with ERROR
// 54000 and the session continues.
const maxRequestBytes = 1 << 20

// codeProgramLimitExceeded is SQLSTATE 54000 (program_limit_exceeded).
const codeProgramLimitExceeded = "54000"

// codeIdleInTransactionTimeout is SQLSTATE 25P03
// (idle_in_transaction_session_timeout).
const codeIdleInTransactionTimeout = "25P03"

// Client states, the state label of sdblocal_proxy_database_client_connections.
const (
	// clientIdle: between transactions; in transaction mode the client
	// holds no backend.
	clientIdle = iota
	// clientWaiting: waiting for its instance to wake or for a backend.
	clientWaiting
	// clientActive: holds a backend and an Instance.Begin.
	clientActive
	clientGone
)

// session is one client connection after login. The client keeps its
// session while backends come and go: in transaction mode it borrows one
// from its database's pool for each transaction, and in session mode it
// keeps one until it disconnects or a suspend closes it. Either way its
// next message after a suspend wakes the instance and gets a new backend.
//
// A session is busy from the first message it forwards while idle until
// the backend reports ReadyForQuery with status idle ('I') and nothing is
// pending: no response owed (the backend's queue) and no extended-protocol
// batch without its Sync. While busy it holds one Instance.Begin, so the
// instance never suspends during a query or an open transaction, and only
// when it stops being busy may its backend go back to the pool.
//
// Goroutines: run reads the client and writes the backend; the backend's
// readLoop writes the client. mu guards the fields below it; clientMu
// serialises writes to the client.
type session struct {
	srv    *Server
	inst   *autoscale.Instance
	pool   *dbPool
	logger *slog.Logger
	key    poolKey
	mode   PoolMode
	// startup are the client's settings from its startup packet: every
	// parameter but user, database, options and replication, plus the
	// -c settings of options, by lower-case name.
	startup map[string]string

	client net.Conn
	// br is the client's read buffer, borrowed from readerPool while the
	// client has bytes to read and returned before each wait for its next
	// message, so that idle clients hold no buffers.
	br       *bufio.Reader
	clientMu sync.Mutex
	// cw is the client's write buffer, borrowed from writerPool and
	// returned at each ReadyForQuery. clientMu guards it.
	cw           *bufio.Writer
	clientBroken bool // a write to the client failed; clientMu guards it
	cancelKey    cancelKey

	mu       sync.Mutex
	backend  *backend
	busy     bool // holds an Instance.Begin
	claimed  bool // the client goroutine is writing to backend
	txStatus byte // from the last ReadyForQuery: 'I', 'T' or 'E'
	ended    bool
	loggedIn bool
	state    int
	// waitCancel ends a wait for a wake or a backend; canceled records
	// that a CancelRequest called it.
	waitCancel context.CancelFunc
	canceled   bool
	idleTimer  *time.Timer
	// wanted are the settings the client's backends must have, by
	// lower-case name: its startup settings and the reported parameters
	// it changed since the last wake. loginWanted is their value at
	// login, shared by clients with the same settings; wantedOwned is
	// false while wanted is loginWanted itself, which must not change.
	wanted      map[string]string
	loginWanted map[string]string
	wantedOwned bool
	// shownBefore contains, after a suspend dropped the client's
	// changes, the values last sent to the client in ParameterStatus, so
	// that its next backend sends the values it got back.
	shownBefore map[string]string

	// stmts is touched only by the client goroutine.
	stmts preparedStatements
}

func newSession(srv *Server, client net.Conn, inst *autoscale.Instance, role string, params map[string]string, options string, logger *slog.Logger) *session {
	s := &session{
		srv:      srv,
		inst:     inst,
		pool:     srv.pool(inst),
		logger:   logger,
		mode:     srv.cfg.PoolMode,
		client:   client,
		txStatus: 'I',
		state:    clientGone,
	}
	s.key, s.startup = clientSettings(role, params, options)
	return s
}

// start registers the session and logs the client in. On failure it
// sends the client the error, ends the session and returns false.
func (s *session) start() bool {
	s.inst.Attach(s)
	s.cancelKey = s.srv.cancels.add(s)
	begun := time.Now()
	cold := !s.inst.Running()
	if err := s.login(); err != nil {
		s.fail(err)
		s.end()
		return false
	}
	s.pool.metrics.observeConnect(cold, time.Since(begun))
	s.logger.Debug("client connected", "cold", cold)
	s.srv.pools.sessions.Add(1)
	return true
}

// serve relays until either side ends, then ends the session.
func (s *session) serve() {
	defer s.srv.pools.sessions.Add(-1)
	defer s.end()
	if err := s.relayClient(); err != nil {
		s.fail(err)
	}
}

// end releases what start took.
func (s *session) end() {
	s.cleanup()
	s.srv.cancels.remove(s.cancelKey)
	s.inst.Detach(s)
}

// login wakes the instance, as a connect to a suspended database does,
// and sends the login response: AuthenticationOk, every parameter the
// backend reports, the proxy's cancel key and ReadyForQuery.
//
// The first client with given settings applies them to a backend and
// waits for the result: a setting the backend rejects ends the login with
// the backend's error, as PostgreSQL rejects such a startup packet. The
// parameters it gets are kept, so that later clients with the same
// settings log in without a backend, even while the pool is full.
func (s *session) login() error {
	cacheKey := loginCacheKey(s.key, s.startup)
	if cached := s.pool.cachedLogin(cacheKey); cached != nil {
		if err := s.beginInstance(context.Background()); err != nil {
			return err
		}
		s.inst.End()
		s.mu.Lock()
		s.wanted, s.loginWanted, s.wantedOwned = cached.wanted, cached.wanted, false
		s.loggedIn = true
		s.setStateLocked(clientIdle)
		s.mu.Unlock()
		return s.sendLoginResponse(cached.reported)
	}

	b, err := s.acquireBackend()
	if err != nil {
		return err
	}
	reported, err := s.applyLoginSettings(b)
	if err != nil {
		return err
	}
	// The backend's reports are the canonical spelling of the settings
	// (DateStyle "ISO" is reported as "ISO, MDY"), which later checkouts
	// compare against.
	wanted := make(map[string]string, len(s.startup)+len(reported))
	for name, value := range s.startup {
		wanted[name] = value
	}
	for name, value := range reported {
		if lower := lowerName(name); !unsettableReported[lower] {
			wanted[lower] = value
		}
	}
	wanted = s.srv.internSettings(wanted)
	s.pool.storeLogin(cacheKey, &loginResult{wanted: wanted, reported: reported})
	s.mu.Lock()
	s.wanted, s.loginWanted, s.wantedOwned = wanted, wanted, false
	s.loggedIn = true
	s.mu.Unlock()
	if err := s.sendLoginResponse(reported); err != nil {
		return err
	}
	s.unclaim()
	return nil
}

// applyLoginSettings applies the client's startup settings to b, waits
// for the result, and returns the parameters b reports then.
func (s *session) applyLoginSettings(b *backend) (map[string]string, error) {
	// Reported parameters the client did not set take the values a new
	// backend starts with.
	b.mu.Lock()
	wanted := make(map[string]string, len(b.defaults)+len(s.startup))
	for name, value := range b.defaults {
		wanted[name] = value
	}
	b.mu.Unlock()
	for name, value := range s.startup {
		wanted[name] = value
	}
	s.mu.Lock()
	s.wanted, s.wantedOwned = wanted, true
	s.mu.Unlock()

	result := make(chan *pgproto3.ErrorResponse, 1)
	if s.applySettings(b, func(errResp *pgproto3.ErrorResponse) { result <- errResp }) {
		if err := b.w.Flush(); err != nil {
			return nil, s.backendWriteFailed(err)
		}
		timer := time.NewTimer(s.srv.cfg.WakeTimeout)
		defer timer.Stop()
		select {
		case errResp := <-result:
			if errResp != nil {
				werr := &wireError{severity: "FATAL", code: errResp.Code, message: errResp.Message, detail: errResp.Detail, hint: errResp.Hint}
				if errResp.Code == codeConnectionFailure {
					werr.message = "lost the connection to database " + s.inst.ID() + " during login"
				}
				return nil, werr
			}
		case <-timer.C:
			return nil, fatalf(codeConnectionFailure, "database %s did not apply the client's settings within %s", s.inst.ID(), s.srv.cfg.WakeTimeout)
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	reported := make(map[string]string, len(b.reported))
	for name, value := range b.reported {
		reported[name] = value
	}
	return reported, nil
}

// sendLoginResponse sends the login response with the parameters in
// reported.
func (s *session) sendLoginResponse(reported map[string]string) error {
	names := make([]string, 0, len(reported))
	for name := range reported {
		names = append(names, name)
	}
	sort.Strings(names)
	msgs := make([]pgproto3.BackendMessage, 0, len(names)+3)
	msgs = append(msgs, &pgproto3.AuthenticationOk{})
	for _, name := range names {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: name, Value: reported[name]})
	}
	msgs = append(msgs,
		&pgproto3.BackendKeyData{ProcessID: s.cancelKey.pid, SecretKey: s.cancelKey.secret[:]},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	return writeMessages(s.client, msgs...)
}

// acquireBackend makes the session busy and returns its backend, claimed:
// it holds an Instance.Begin (waking the instance if needed) and a backend
// from the pool with the client's settings applied or about to be.
// Waiting for either ends early on a CancelRequest, with ERROR 57014.
func (s *session) acquireBackend() (*backend, error) {
	s.mu.Lock()
	busy, b := s.busy, s.backend
	if busy && b != nil {
		s.claimed = true
		s.mu.Unlock()
		return b, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.waitCancel, s.canceled = cancel, false
	s.setStateLocked(clientWaiting)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waitCancel = nil
		s.mu.Unlock()
	}()

	if !busy {
		if err := s.beginInstance(ctx); err != nil {
			s.mu.Lock()
			s.setStateLocked(clientIdle)
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Lock()
		s.busy = true
		b = s.backend
		if b != nil {
			s.claimed = true
			s.setStateLocked(clientActive)
		}
		s.mu.Unlock()
		if b != nil {
			return b, nil
		}
	}

	b, err := s.pool.checkout(s, s.key, ctx.Done())
	if err != nil {
		if errors.Is(err, errWaitCanceled) {
			err = errorf(codeQueryCanceled, "canceling statement due to user request")
		}
		s.mu.Lock()
		s.busy = false
		s.inst.End()
		s.setStateLocked(clientIdle)
		s.mu.Unlock()
		return nil, err
	}
	b.mu.Lock()
	b.owner = s
	b.mu.Unlock()
	s.mu.Lock()
	s.backend = b
	s.txStatus = 'I'
	s.claimed = true
	s.setStateLocked(clientActive)
	loggedIn := s.loggedIn
	s.mu.Unlock()
	if loggedIn && !s.applySettings(b, s.settingsApplied) {
		s.settingsApplied(nil)
	}
	return b, nil
}

// beginInstance runs Instance.Begin, which wakes a suspended instance,
// bounded by WakeTimeout and ended by ctx.
func (s *session) beginInstance(ctx context.Context) error {
	if !s.inst.Running() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.srv.cfg.WakeTimeout)
		defer cancel()
	}
	err := s.inst.Begin(ctx)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	canceled := s.canceled
	s.mu.Unlock()
	switch {
	case canceled:
		return errorf(codeQueryCanceled, "canceling statement due to user request")
	case errors.Is(err, autoscale.ErrRemoved):
		return fatalf(codeAdminShutdown, "terminating connection because database %s is being deleted", s.inst.ID())
	}
	return fatalf(codeSystemError, "could not wake database %s: %v", s.inst.ID(), err)
}

// cancelWait ends a wait for a wake or a backend, for a CancelRequest. It
// returns false when the session is not waiting.
func (s *session) cancelWait() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waitCancel == nil {
		return false
	}
	s.canceled = true
	s.waitCancel()
	return true
}

// unclaim ends the client goroutine's use of the backend for one message,
// and gives the backend back when that left the session idle.
func (s *session) unclaim() {
	s.mu.Lock()
	s.claimed = false
	b := s.checkIdleLocked()
	s.mu.Unlock()
	if b != nil {
		s.pool.release(b)
	}
}

// checkIdleLocked ends the session's busy period when nothing is pending
// and the backend is outside a transaction, and returns the backend to
// give back to the pool in transaction mode. A backend left inside a
// transaction starts the idle-in-transaction timer. mu must be held.
func (s *session) checkIdleLocked() *backend {
	b := s.backend
	if b == nil || s.claimed || !s.loggedIn {
		return nil
	}
	b.mu.Lock()
	pending := b.queue.len() > 0 || b.openBatch || b.copyIn
	b.mu.Unlock()
	if pending {
		return nil
	}
	if s.txStatus != 'I' {
		s.armIdleTimerLocked()
		return nil
	}
	if s.busy {
		s.busy = false
		s.inst.End()
	}
	s.setStateLocked(clientIdle)
	if s.mode != PoolTransaction {
		return nil
	}
	s.backend = nil
	return b
}

// holds reports whether b is the session's backend.
func (s *session) holds(b *backend) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backend == b
}

// idleWith reports whether b is the session's backend and the session is
// idle, waiting for nothing from it.
func (s *session) idleWith(b *backend) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backend == b && !s.busy && !s.claimed
}

// setStateLocked moves the client to state in the gauges. mu must be held.
func (s *session) setStateLocked(state int) {
	if s.state == state {
		return
	}
	if s.state != clientGone {
		s.pool.metrics.clients[s.state].Dec()
	}
	if state != clientGone {
		s.pool.metrics.clients[state].Inc()
	}
	s.state = state
}

// armIdleTimerLocked starts the idle-in-transaction timer. mu must be held.
func (s *session) armIdleTimerLocked() {
	timeout := s.srv.cfg.IdleInTransactionTimeout
	if timeout <= 0 || s.ended {
		return
	}
	if s.idleTimer == nil {
		s.idleTimer = time.AfterFunc(timeout, s.idleInTransactionExpired)
		return
	}
	s.idleTimer.Reset(timeout)
}

func (s *session) stopIdleTimer() {
	s.mu.Lock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	s.mu.Unlock()
}

// idleInTransactionExpired disconnects a client still idle inside a
// transaction, with PostgreSQL's message for
// idle_in_transaction_session_timeout. Closing the backend rolls the
// transaction back.
func (s *session) idleInTransactionExpired() {
	s.mu.Lock()
	b := s.backend
	idle := b != nil && !s.claimed && s.txStatus != 'I' && !s.ended
	s.mu.Unlock()
	if !idle {
		return
	}
	b.mu.Lock()
	idle = b.queue.len() == 0
	b.mu.Unlock()
	if !idle {
		return
	}
	s.logger.Info("client disconnected: idle in transaction for too long", "timeout", s.srv.cfg.IdleInTransactionTimeout, "backend_pid", b.pid)
	s.srv.metrics.rejected.WithLabelValues(codeIdleInTransactionTimeout).Inc()
	s.Terminate(codeIdleInTransactionTimeout, "terminating connection due to idle-in-transaction timeout")
}

// backendLost handles the end of the session's backend, which the proxy
// did not close itself. An idle client keeps its session and gets a new
// backend on its next message. A busy client is disconnected, as
// PostgreSQL would disconnect it, with the backend's FATAL error if it
// sent one.
func (s *session) backendLost(b *backend, err error, sawFatal bool) {
	s.mu.Lock()
	if s.backend != b {
		s.mu.Unlock()
		return
	}
	s.backend = nil
	wasBusy := s.busy
	s.txStatus = 'I'
	if s.busy {
		s.busy = false
		s.inst.End()
	}
	s.setStateLocked(clientIdle)
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return
	}
	if !wasBusy && !sawFatal {
		s.logger.Info("idle backend connection closed by the instance; the next query opens a new one", "backend_pid", b.pid, "error", err)
		return
	}
	if !sawFatal {
		s.sendError(fatalf(codeConnectionFailure, "lost the connection to database %s during a query: %v", s.inst.ID(), err))
	}
	s.logger.Info("backend connection lost; closing client", "backend_pid", b.pid, "error", err)
	s.client.Close()
}

// DetachBackend runs before a suspend, while no client is active: an idle
// session-mode client's backend is closed, and every client's settings go
// back to their values at login, because a suspend drops what SET changed.
func (s *session) DetachBackend() {
	s.mu.Lock()
	if s.wantedOwned {
		s.shownBefore = s.wanted
		s.wanted, s.wantedOwned = s.loginWanted, false
	}
	b := s.backend
	if b != nil && (s.busy || s.claimed) {
		s.mu.Unlock()
		s.logger.Info("instance stopping while the session is busy; its backend ends with the instance")
		return
	}
	s.backend = nil
	s.mu.Unlock()
	if b != nil {
		b.mu.Lock()
		b.owner = nil
		b.mu.Unlock()
		s.pool.discard(b)
	}
}

// Terminate ends the session with a FATAL error, and ends any wait for a
// wake or a backend, so that the session's goroutine returns at once.
func (s *session) Terminate(sqlstate, message string) {
	s.sendError(&wireError{severity: "FATAL", code: sqlstate, message: message})
	s.client.Close()
	s.cancelWait()
}

// fail reports err to the client when it is a wire error, and logs it.
func (s *session) fail(err error) {
	if werr, ok := asWireError(err); ok {
		s.srv.metrics.rejected.WithLabelValues(werr.code).Inc()
		s.logger.Info("session ended with error", "sqlstate", werr.code, "reason", werr.message)
		s.sendError(werr)
		return
	}
	s.logger.Info("session ended with error", "error", err)
}

// cleanup gives the backend back, clean, or closes it, and releases the
// session's Begin and buffers.
func (s *session) cleanup() {
	s.mu.Lock()
	s.ended = true
	b := s.backend
	s.backend = nil
	if s.busy {
		s.busy = false
		s.inst.End()
	}
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	clean := b != nil && s.txStatus == 'I' && !s.claimed
	s.setStateLocked(clientGone)
	s.mu.Unlock()
	if b != nil {
		b.mu.Lock()
		b.owner = nil
		clean = clean && b.queue.len() == 0 && !b.openBatch && !b.copyIn
		b.mu.Unlock()
		if clean {
			s.pool.release(b)
		} else {
			s.pool.discard(b)
		}
	}
	if s.br != nil {
		putReader(s.br)
		s.br = nil
	}
	s.clientMu.Lock()
	if s.cw != nil {
		putWriter(s.cw)
		s.cw = nil
	}
	s.clientMu.Unlock()
	s.logger.Debug("client disconnected")
}
