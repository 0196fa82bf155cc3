package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sdblocal/sdblocal/autoscale"
)

// maxMessage is the largest message the relay forwards, PostgreSQL's
// PQ_LARGE_MESSAGE_LIMIT (1 GiB - 1): the server would reject more anyway.
const maxMessage = 1<<30 - 1

// bufferedCopyLimit is the largest message body read whole before it is
// forwarded; longer bodies are streamed so memory stays bounded.
const bufferedCopyLimit = 64 * 1024

// session is one client connection after login. The client keeps its
// session while its backend connection comes and goes: a suspend detaches
// the backend of an idle client, and the client's next message wakes the
// instance and opens a new one. Settings made with SET do not survive that,
// as in the real service.
//
// A session is busy from the first message it forwards while idle until
// the backend reports ReadyForQuery with status idle ('I') and no Sync or
// Query is still unanswered. While busy it holds one Instance.Begin, so the
// instance never suspends during a query or an open transaction.
//
// Goroutines: run reads the client and writes the backend; readBackend
// reads the backend and writes the client. mu guards the fields below it;
// clientMu serialises writes to the client.
type session struct {
	srv    *Server
	inst   *autoscale.Instance
	logger *slog.Logger
	params map[string]string
	// options is the startup options value without the routing option.
	options string
	// role is the PostgreSQL role every backend of the session logs in as.
	role string

	client   net.Conn
	clientR  *bufio.Reader
	clientMu sync.Mutex
	clientW  *bufio.Writer
	key      cancelKey

	mu        sync.Mutex
	backend   *backend
	busy      bool // holds an Instance.Begin
	inflight  int  // Query, Sync and FunctionCall messages with no ReadyForQuery yet
	openBatch bool // extended-protocol messages sent since the last Sync
	txStatus  byte // from the last ReadyForQuery: 'I', 'T' or 'E'
	ended     bool

	// prepared is touched only by the goroutine running relayClient.
	prepared preparedStatements
}

func newSession(srv *Server, client net.Conn, inst *autoscale.Instance, role string, params map[string]string, options string, logger *slog.Logger) *session {
	return &session{
		srv:      srv,
		inst:     inst,
		logger:   logger,
		params:   params,
		options:  options,
		role:     role,
		client:   client,
		clientR:  bufio.NewReaderSize(client, 32*1024),
		clientW:  bufio.NewWriterSize(client, 32*1024),
		txStatus: 'I',
	}
}

// run completes the login and relays until either side ends.
func (s *session) run() {
	s.inst.Attach(s)
	defer s.inst.Detach(s)
	s.key = s.srv.cancels.add(s)
	defer s.srv.cancels.remove(s.key)
	defer s.cleanup()

	if err := s.begin(); err != nil {
		s.fail(err)
		return
	}
	b, err := s.dial()
	if err != nil {
		s.fail(err)
		return
	}
	if err := s.sendLoginResponse(b); err != nil {
		s.logger.Debug("client left during login", "error", err)
		return
	}
	s.logger.Debug("client connected", "backend_pid", b.pid)
	s.mu.Lock()
	s.backend = b
	s.setBusyLocked(false)
	s.mu.Unlock()
	go s.readBackend(b)

	if err := s.relayClient(); err != nil {
		s.fail(err)
	}
}

// begin marks the session busy, waking the instance if needed.
func (s *session) begin() error {
	ctx, cancel := s.srv.wakeContext()
	defer cancel()
	if err := s.inst.Begin(ctx); err != nil {
		if errors.Is(err, autoscale.ErrRemoved) {
			return fatalf(codeAdminShutdown, "terminating connection because database %s is being deleted", s.inst.ID())
		}
		return fatalf(codeSystemError, "could not wake database %s: %v", s.inst.ID(), err)
	}
	s.mu.Lock()
	s.busy = true
	s.mu.Unlock()
	return nil
}

// dial opens a backend connection for the session. While the instance
// runs crash recovery (after one of its backends died) it answers 57P03;
// dial retries then, so the client sees a slower connection, not an error.
func (s *session) dial() (*backend, error) {
	ctx, cancel := s.srv.wakeContext()
	defer cancel()
	for {
		b, err := dialBackend(ctx, s.inst, s.role, s.params, s.options)
		if err == nil {
			return b, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == codeCannotConnectNow && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if errors.As(err, &pgErr) {
			return nil, fromPgError(pgErr)
		}
		return nil, fatalf(codeConnectionFailure, "could not connect to database %s: %v", s.inst.ID(), err)
	}
}

func (s *session) sendLoginResponse(b *backend) error {
	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	names := make([]string, 0, len(b.parameters))
	for name := range b.parameters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: name, Value: b.parameters[name]})
	}
	msgs = append(msgs,
		&pgproto3.BackendKeyData{ProcessID: s.key.pid, SecretKey: s.key.secret[:]},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	return writeMessages(s.client, msgs...)
}

// setBusyLocked updates busy from the protocol state, ending the
// session's Instance.Begin when it becomes idle. mu must be held.
func (s *session) setBusyLocked(force bool) {
	busy := force || s.inflight > 0 || s.openBatch || s.txStatus != 'I'
	if s.busy && !busy {
		s.inst.End()
	}
	s.busy = busy
}

// relayClient forwards client messages to the backend until the client
// ends the session or an error occurs.
func (s *session) relayClient() error {
	var header [5]byte
	for {
		if _, err := io.ReadFull(s.clientR, header[:]); err != nil {
			return nil // the client hung up
		}
		msgType := header[0]
		length := binary.BigEndian.Uint32(header[1:])
		if length < 4 || length > maxMessage {
			return fatalf(codeProtocolViolation, "invalid message length %d for message type %q", length, msgType)
		}
		if msgType == 'X' {
			return nil
		}

		s.mu.Lock()
		idle := !s.busy
		s.mu.Unlock()
		if idle {
			if err := s.begin(); err != nil {
				return err
			}
		}
		b, err := s.currentBackend()
		if err != nil {
			return err
		}

		s.mu.Lock()
		switch msgType {
		case 'Q', 'F':
			s.inflight++
		case 'S':
			s.inflight++
			s.openBatch = false
		case 'P', 'B', 'D', 'E', 'C':
			s.openBatch = true
		}
		s.mu.Unlock()

		if err := s.relayMessage(b, header, length); err != nil {
			return err
		}

		s.mu.Lock()
		s.setBusyLocked(false)
		s.mu.Unlock()
	}
}

// relayMessage forwards one client message. Parse and Close are read whole
// to track named prepared statements, and short simple Queries to notice
// DEALLOCATE and DISCARD; everything else is streamed.
func (s *session) relayMessage(b *backend, header [5]byte, length uint32) error {
	msgType := header[0]
	inspect := msgType == 'P' || msgType == 'C' || (msgType == 'Q' && length-4 <= maxInspectedQuery)
	if !inspect {
		return s.forward(b, header, length)
	}
	if msgType == 'P' && int(length) > maxPreparedBytes {
		return &wireError{severity: "FATAL", code: codeConfigurationLimit, message: fmt.Sprintf(preparedLimitMessage, maxPreparedBytes)}
	}
	message := make([]byte, 1+length)
	copy(message, header[:])
	if _, err := io.ReadFull(s.clientR, message[5:]); err != nil {
		return nil // the client hung up mid-message
	}
	switch msgType {
	case 'P':
		if werr := s.prepared.add(message); werr != nil {
			return werr
		}
	case 'C':
		s.prepared.close(message)
	case 'Q':
		s.prepared.observeQuery(message)
	}
	if _, err := b.w.Write(message); err != nil {
		return s.backendWriteFailed(err)
	}
	if s.clientR.Buffered() == 0 {
		if err := b.w.Flush(); err != nil {
			return s.backendWriteFailed(err)
		}
	}
	return nil
}

// currentBackend returns the session's backend, opening one when a suspend
// or an idle disconnect took the last one away.
func (s *session) currentBackend() (*backend, error) {
	s.mu.Lock()
	b := s.backend
	s.mu.Unlock()
	if b != nil {
		return b, nil
	}
	b, err := s.dial()
	if err != nil {
		return nil, err
	}
	if err := s.prepared.replay(b); err != nil {
		b.close()
		return nil, fatalf(codeConnectionFailure, "could not prepare the session's statements again on database %s: %v", s.inst.ID(), err)
	}
	s.logger.Debug("backend reattached", "backend_pid", b.pid, "prepared_statements", len(s.prepared.order))
	s.mu.Lock()
	s.backend = b
	s.txStatus = 'I'
	s.mu.Unlock()
	go s.readBackend(b)
	return b, nil
}

// forward copies one client message to the backend: small bodies in one
// write, large ones streamed. The backend's buffer is flushed once the
// client has nothing more queued, so pipelined messages travel together.
func (s *session) forward(b *backend, header [5]byte, length uint32) error {
	if _, err := b.w.Write(header[:]); err != nil {
		return s.backendWriteFailed(err)
	}
	if _, err := io.CopyN(b.w, s.clientR, int64(length-4)); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		return s.backendWriteFailed(err)
	}
	if s.clientR.Buffered() == 0 {
		if err := b.w.Flush(); err != nil {
			return s.backendWriteFailed(err)
		}
	}
	return nil
}

func (s *session) backendWriteFailed(err error) error {
	return fatalf(codeConnectionFailure, "lost the connection to database %s: %v", s.inst.ID(), err)
}

// readBackend forwards backend messages to the client, tracking
// ReadyForQuery to detect when the session becomes idle.
func (s *session) readBackend(b *backend) {
	var header [5]byte
	sawFatal := false
	for {
		_, err := io.ReadFull(b.r, header[:])
		if err == nil {
			sawFatal, err = s.forwardToClient(b, header)
		}
		if err != nil {
			s.backendEnded(b, err, sawFatal)
			return
		}
	}
}

func (s *session) forwardToClient(b *backend, header [5]byte) (sawFatal bool, err error) {
	msgType := header[0]
	length := binary.BigEndian.Uint32(header[1:])
	if length < 4 || length > maxMessage {
		return false, fmt.Errorf("backend sent invalid message length %d", length)
	}
	body := int64(length - 4)

	if msgType == 'E' && body <= bufferedCopyLimit {
		return s.forwardError(b, header, body)
	}

	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if _, err := s.clientW.Write(header[:]); err != nil {
		return false, err
	}
	switch {
	case msgType == 'Z' && body == 1:
		status, err := b.r.ReadByte()
		if err != nil {
			return false, err
		}
		if err := s.clientW.WriteByte(status); err != nil {
			return false, err
		}
		if err := s.clientW.Flush(); err != nil {
			return false, err
		}
		s.mu.Lock()
		if s.inflight > 0 {
			s.inflight--
		}
		s.txStatus = status
		s.setBusyLocked(false)
		s.mu.Unlock()
		return false, nil
	default:
		if _, err := io.CopyN(s.clientW, b.r, body); err != nil {
			return false, err
		}
	}
	if b.r.Buffered() == 0 {
		if err := s.clientW.Flush(); err != nil {
			return sawFatal, err
		}
	}
	return sawFatal, nil
}

// forwardError forwards an ErrorResponse, except a FATAL one that reaches
// an idle session: the instance is then ending the backend connection on
// its own (a crash, pg_terminate_backend, idle_session_timeout), and the
// client, which waits for nothing, keeps its session and gets a new
// backend on its next message, as after a suspend.
func (s *session) forwardError(b *backend, header [5]byte, body int64) (sawFatal bool, err error) {
	raw := make([]byte, body)
	if _, err := io.ReadFull(b.r, raw); err != nil {
		return false, err
	}
	var msg pgproto3.ErrorResponse
	fatal := msg.Decode(raw) == nil && (msg.Severity == "FATAL" || msg.Severity == "PANIC")
	if fatal {
		s.mu.Lock()
		idle := !s.busy
		s.mu.Unlock()
		if idle {
			s.logger.Info("backend ended by the instance while the client was idle", "backend_pid", b.pid, "sqlstate", msg.Code, "reason", msg.Message)
			return false, nil
		}
	}

	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if _, err := s.clientW.Write(header[:]); err != nil {
		return false, err
	}
	if _, err := s.clientW.Write(raw); err != nil {
		return false, err
	}
	if b.r.Buffered() == 0 {
		if err := s.clientW.Flush(); err != nil {
			return fatal, err
		}
	}
	return fatal, nil
}

// backendEnded handles the end of a backend connection the proxy did not
// close itself. An idle client keeps its session and gets a new backend on
// its next message. A busy client, or one whose backend sent FATAL, is
// disconnected, as PostgreSQL would disconnect it.
func (s *session) backendEnded(b *backend, err error, sawFatal bool) {
	if b.detached.Load() {
		return
	}
	b.conn.Close()
	s.mu.Lock()
	if s.backend == b {
		s.backend = nil
	}
	wasBusy := s.busy
	s.inflight, s.openBatch, s.txStatus = 0, false, 'I'
	s.setBusyLocked(false)
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

// DetachBackend closes the backend of an idle session before a suspend.
func (s *session) DetachBackend() {
	s.mu.Lock()
	if s.busy {
		s.mu.Unlock()
		s.logger.Info("instance stopping while the session is busy; its backend ends with the instance")
		return
	}
	b := s.backend
	s.backend = nil
	s.mu.Unlock()
	if b != nil {
		b.close()
	}
}

// Terminate ends the session with a FATAL error.
func (s *session) Terminate(sqlstate, message string) {
	s.sendError(&wireError{severity: "FATAL", code: sqlstate, message: message})
	s.client.Close()
}

func (s *session) sendError(err *wireError) {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	// A client that stops reading must not hold up a shutdown or a delete.
	_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
	_ = s.clientW.Flush()
	_ = writeMessages(s.client, err.toMessage())
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

// cleanup releases the backend and the session's Begin, if held.
func (s *session) cleanup() {
	s.mu.Lock()
	s.ended = true
	b := s.backend
	s.backend = nil
	if s.busy {
		s.busy = false
		s.inst.End()
	}
	s.mu.Unlock()
	if b != nil {
		b.close()
	}
	s.logger.Debug("client disconnected")
}
