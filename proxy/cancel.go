package proxy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKey is the BackendKeyData the proxy gives a client. It is the
// proxy's own, not the backend's, because the backend changes across
// suspends while the client keeps its key.
type cancelKey struct {
	pid    uint32
	secret [4]byte
}

// cancelKeys maps the keys handed to clients to their sessions.
type cancelKeys struct {
	mu       sync.Mutex
	sessions map[uint32]*keyedSession
}

type keyedSession struct {
	key     cancelKey
	session *session
}

func newCancelKeys() *cancelKeys {
	return &cancelKeys{sessions: map[uint32]*keyedSession{}}
}

// add draws an unused random key for s.
func (c *cancelKeys) add(s *session) cancelKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		var raw [8]byte
		if _, err := rand.Read(raw[:]); err != nil {
			panic(err)
		}
		// PostgreSQL process IDs are positive int32 values; drivers may
		// store the key's first half in a signed 32-bit integer.
		pid := binary.BigEndian.Uint32(raw[:4]) & 0x7fffffff
		if pid == 0 || c.sessions[pid] != nil {
			continue
		}
		key := cancelKey{pid: pid}
		copy(key.secret[:], raw[4:])
		c.sessions[pid] = &keyedSession{key: key, session: s}
		return key
	}
}

// all returns every session that holds a key.
func (c *cancelKeys) all() []*session {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*session, 0, len(c.sessions))
	for _, entry := range c.sessions {
		out = append(out, entry.session)
	}
	return out
}

func (c *cancelKeys) remove(key cancelKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, key.pid)
}

// lookup returns the session whose key matches, comparing the secret in
// constant time.
func (c *cancelKeys) lookup(pid uint32, secret []byte) *session {
	c.mu.Lock()
	entry := c.sessions[pid]
	c.mu.Unlock()
	if entry == nil || subtle.ConstantTimeCompare(entry.key.secret[:], secret) != 1 {
		return nil
	}
	return entry.session
}

// forwardCancel sends a CancelRequest for the session's current backend to
// its instance. As in PostgreSQL, the client gets no reply either way.
func (s *Server) forwardCancel(req *cancelRequest, logger *slog.Logger) {
	sess := s.cancels.lookup(req.pid, req.secret)
	if sess == nil {
		s.metrics.cancels.WithLabelValues("unknown_key").Inc()
		logger.Info("cancel request with an unknown key ignored")
		return
	}
	sess.mu.Lock()
	b := sess.backend
	sess.mu.Unlock()
	if b == nil {
		s.metrics.cancels.WithLabelValues("no_backend").Inc()
		return
	}
	socket := sess.inst.SocketDir() + "/.s.PGSQL." + strconv.Itoa(int(sess.inst.SocketPort()))
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		s.metrics.cancels.WithLabelValues("error").Inc()
		logger.Warn("cancel request not delivered", "database_id", sess.inst.ID(), "error", err)
		return
	}
	defer conn.Close()
	msg, err := (&pgproto3.CancelRequest{ProcessID: b.pid, SecretKey: b.secret}).Encode(nil)
	if err == nil {
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Write(msg)
	}
	if err != nil {
		s.metrics.cancels.WithLabelValues("error").Inc()
		logger.Warn("cancel request not delivered", "database_id", sess.inst.ID(), "error", err)
		return
	}
	s.metrics.cancels.WithLabelValues("forwarded").Inc()
	logger.Info("cancel request forwarded", "database_id", sess.inst.ID(), "backend_pid", b.pid)
}
