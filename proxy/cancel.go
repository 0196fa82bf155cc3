package proxy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/time/rate"
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
	limiter *cancelLimiter

	mu       sync.Mutex
	sessions map[uint32]*keyedSession
}

type keyedSession struct {
	key     cancelKey
	session *session
}

func newCancelKeys(perSecond float64, burst int) *cancelKeys {
	return &cancelKeys{limiter: newCancelLimiter(perSecond, burst), sessions: map[uint32]*keyedSession{}}
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

// maxCancelLimiters bounds the per-address cancel rate limiters kept.
// Past it the idlest are dropped, which only lets those addresses start
// again with a full bucket.
const maxCancelLimiters = 10000

// cancelLimiter limits CancelRequests per client IP address, so that a
// client cannot flood the instances with cancels (each one opens a
// connection to the postmaster).
type cancelLimiter struct {
	rate  rate.Limit
	burst int

	mu       sync.Mutex
	limiters map[string]*addressLimiter
}

type addressLimiter struct {
	limiter *rate.Limiter
	last    time.Time
}

func newCancelLimiter(perSecond float64, burst int) *cancelLimiter {
	return &cancelLimiter{rate: rate.Limit(perSecond), burst: burst, limiters: map[string]*addressLimiter{}}
}

// allow reports whether a CancelRequest from addr may go through now.
func (c *cancelLimiter) allow(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	entry := c.limiters[addr]
	if entry == nil {
		if len(c.limiters) >= maxCancelLimiters {
			c.evictLocked(now)
		}
		entry = &addressLimiter{limiter: rate.NewLimiter(c.rate, c.burst)}
		c.limiters[addr] = entry
	}
	entry.last = now
	return entry.limiter.AllowN(now, 1)
}

// evictLocked drops the limiters of addresses quiet for a minute, or half
// of them when none is. mu must be held.
func (c *cancelLimiter) evictLocked(now time.Time) {
	for addr, entry := range c.limiters {
		if now.Sub(entry.last) > time.Minute {
			delete(c.limiters, addr)
		}
	}
	for addr := range c.limiters {
		if len(c.limiters) < maxCancelLimiters/2 {
			break
		}
		delete(c.limiters, addr)
	}
}

// forwardCancel cancels what the session with the request's key is doing:
// a wait for a wake or for a backend ends at once with ERROR 57014, and a
// query on a backend is cancelled through the instance. As in PostgreSQL,
// the client gets no reply either way.
func (s *Server) forwardCancel(req *cancelRequest, clientAddr string, logger *slog.Logger) {
	if !s.cancels.limiter.allow(clientAddr) {
		s.metrics.cancels.WithLabelValues("rate_limited").Inc()
		logger.Info("cancel request rejected: too many from this address", "rate_per_second", s.cfg.CancelRate, "burst", s.cfg.CancelBurst)
		return
	}
	sess := s.cancels.lookup(req.pid, req.secret)
	if sess == nil {
		s.metrics.cancels.WithLabelValues("unknown_key").Inc()
		logger.Info("cancel request with an unknown key ignored")
		return
	}
	if sess.cancelWait() {
		s.metrics.cancels.WithLabelValues("wait_canceled").Inc()
		logger.Info("cancel request ended a wait for a backend", "database_id", sess.inst.ID())
		return
	}
	sess.mu.Lock()
	b := sess.backend
	if b != nil {
		b.mu.Lock()
		b.cancels++
		b.mu.Unlock()
	}
	sess.mu.Unlock()
	if b == nil {
		s.metrics.cancels.WithLabelValues("no_backend").Inc()
		return
	}
	err := deliverCancel(sess, b)
	b.mu.Lock()
	b.cancels--
	release := b.cancels == 0 && b.releaseAfterCancel
	if release {
		b.releaseAfterCancel = false
	}
	b.mu.Unlock()
	if release {
		b.pool.release(b)
	}
	if err != nil {
		s.metrics.cancels.WithLabelValues("error").Inc()
		logger.Warn("cancel request not delivered", "database_id", sess.inst.ID(), "error", err)
		return
	}
	s.metrics.cancels.WithLabelValues("forwarded").Inc()
	logger.Info("cancel request forwarded", "database_id", sess.inst.ID(), "backend_pid", b.pid)
}

// deliverCancel sends a CancelRequest for b to its instance and waits for
// the postmaster to close the connection, which it does once it has
// signalled the backend. Until then the backend does not go back to the
// pool, so the cancel cannot reach its next client.
func deliverCancel(sess *session, b *backend) error {
	socket := sess.inst.SocketDir() + "/.s.PGSQL." + strconv.Itoa(int(sess.inst.SocketPort()))
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	msg, err := (&pgproto3.CancelRequest{ProcessID: b.pid, SecretKey: b.secret}).Encode(nil)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, conn)
	return nil
}
