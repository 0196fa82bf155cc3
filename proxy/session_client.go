package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// clientBufferSize is the size of the read and write buffers a client
// borrows while it has something to send or receive.
const clientBufferSize = 32 * 1024

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientBufferSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientBufferSize) }}
)

func getReader(conn net.Conn) *bufio.Reader {
	r := readerPool.Get().(*bufio.Reader)
	r.Reset(conn)
	return r
}

func putReader(r *bufio.Reader) {
	r.Reset(nil)
	readerPool.Put(r)
}

func getWriter(conn net.Conn) *bufio.Writer {
	w := writerPool.Get().(*bufio.Writer)
	w.Reset(conn)
	return w
}

func putWriter(w *bufio.Writer) {
	w.Reset(nil)
	writerPool.Put(w)
}

// errorf returns an ERROR the client gets for one request; its session
// continues.
func errorf(code, format string, args ...any) *wireError {
	return &wireError{severity: "ERROR", code: code, message: fmt.Sprintf(format, args...)}
}

// keepBuffersBelow is the number of sessions under which clients keep
// their read buffer while idle, which saves a read system call per
// round trip on plain-text connections. With more sessions, memory counts
// more.
const keepBuffersBelow = 256

// readHeader reads the next message header. Before it waits for a client
// with nothing buffered, it returns the read buffer, when many clients are
// connected, and reads the header straight from the connection. The
// buffer is borrowed again for the body and what follows.
func (s *session) readHeader(header *[5]byte) error {
	if s.br != nil && s.br.Buffered() == 0 && s.srv.pools.sessions.Load() >= keepBuffersBelow {
		putReader(s.br)
		s.br = nil
	}
	if s.br == nil {
		if _, err := io.ReadFull(s.client, header[:]); err != nil {
			return err
		}
		s.br = getReader(s.client)
		return nil
	}
	_, err := io.ReadFull(s.br, header[:])
	return err
}

// writerLocked returns the client's write buffer, borrowing one if
// needed. clientMu must be held.
func (s *session) writerLocked() *bufio.Writer {
	if s.cw == nil {
		s.cw = getWriter(s.client)
	}
	return s.cw
}

// writeFromBackend copies one message from b to the client. It returns
// only errors reading b. A client that stops reading is marked broken and
// the rest of its output discarded, so the backend can still be drained.
func (s *session) writeFromBackend(b *backend, header [5]byte, body int) error {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.clientBroken {
		_, err := b.r.Discard(body)
		return err
	}
	w := s.writerLocked()
	s.clientWrite(w, header[:])
	for remaining := body; remaining > 0; {
		n := min(remaining, b.r.Size())
		chunk, err := b.r.Peek(n)
		if err != nil {
			return err
		}
		s.clientWrite(w, chunk)
		if _, err := b.r.Discard(n); err != nil {
			return err
		}
		remaining -= n
	}
	s.pool.metrics.sentBytes.Add(float64(len(header) + body))
	if b.r.Buffered() == 0 {
		s.flushClientLocked()
	}
	return nil
}

// writeRawFromBackend forwards a message the backend's goroutine has read
// whole.
func (s *session) writeRawFromBackend(header [5]byte, body []byte) error {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.clientBroken {
		return nil
	}
	w := s.writerLocked()
	s.clientWrite(w, header[:])
	s.clientWrite(w, body)
	s.pool.metrics.sentBytes.Add(float64(len(header) + len(body)))
	s.flushClientLocked()
	return nil
}

// clientWrite writes p to the client's buffer, marking the client broken
// when that fails. clientMu must be held.
func (s *session) clientWrite(w *bufio.Writer, p []byte) {
	if s.clientBroken {
		return
	}
	if _, err := w.Write(p); err != nil {
		s.clientBroken = true
	}
}

// flushClientLocked flushes the client's buffer. clientMu must be held.
func (s *session) flushClientLocked() {
	if s.cw == nil || s.clientBroken {
		return
	}
	if err := s.cw.Flush(); err != nil {
		s.clientBroken = true
	}
}

// onReadyForQuery forwards ReadyForQuery, returns the client's write
// buffer, and ends the busy period when nothing else is pending.
func (s *session) onReadyForQuery(b *backend, header [5]byte, status byte) {
	s.clientMu.Lock()
	if !s.clientBroken {
		w := s.writerLocked()
		s.clientWrite(w, header[:])
		if !s.clientBroken {
			if err := w.WriteByte(status); err != nil {
				s.clientBroken = true
			}
		}
		s.pool.metrics.sentBytes.Add(6)
		s.flushClientLocked()
	}
	if s.cw != nil && s.cw.Buffered() == 0 {
		putWriter(s.cw)
		s.cw = nil
	}
	s.clientMu.Unlock()

	s.mu.Lock()
	if s.backend != b {
		s.mu.Unlock()
		return
	}
	s.txStatus = status
	release := s.checkIdleLocked()
	s.mu.Unlock()
	if release != nil {
		s.pool.release(release)
	}
}

// sendMessages writes messages the proxy makes itself to the client, after
// anything buffered.
func (s *session) sendMessages(msgs ...pgproto3.BackendMessage) error {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	if s.clientBroken {
		return net.ErrClosed
	}
	var buf []byte
	for _, msg := range msgs {
		var err error
		if buf, err = msg.Encode(buf); err != nil {
			return fmt.Errorf("encode %T: %w", msg, err)
		}
	}
	w := s.writerLocked()
	s.clientWrite(w, buf)
	s.pool.metrics.sentBytes.Add(float64(len(buf)))
	s.flushClientLocked()
	if s.clientBroken {
		return net.ErrClosed
	}
	return nil
}

// sendNotice sends a NOTICE to the client, for a client kept waiting. A
// client still logging in gets none, because libpq accepts no NOTICE
// before AuthenticationOk.
func (s *session) sendNotice(message string) {
	s.mu.Lock()
	loggedIn := s.loggedIn
	s.mu.Unlock()
	if !loggedIn {
		return
	}
	_ = s.sendMessages(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: message})
}

func fmtPoolWaitNotice(databaseID string, waited time.Duration, size int) string {
	return fmt.Sprintf("waiting for a backend connection to database %s for %s: all %d are in use", databaseID, waited.Round(time.Second), size)
}

// sendError sends err to the client before the proxy closes it. A client
// that stops reading must not hold up a shutdown or a delete.
func (s *session) sendError(err *wireError) {
	s.clientMu.Lock()
	defer s.clientMu.Unlock()
	_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
	s.flushClientLocked()
	_ = writeMessages(s.client, err.toMessage())
}

func (s *session) backendWriteFailed(err error) error {
	return fatalf(codeConnectionFailure, "lost the connection to database %s: %v", s.inst.ID(), err)
}
