package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// backend is the proxy's connection to an instance. It belongs to its
// database's pool, which lends it to one session at a time (its owner).
//
// Goroutines: the owner's client goroutine writes w and pushes the
// responses it expects onto queue; readLoop, the backend's own goroutine,
// reads r for as long as the connection lives, pops queue and forwards
// what it reads to the owner. mu guards the fields below it.
type backend struct {
	pool *dbPool
	key  poolKey
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	pid  uint32
	// secret is the backend's own cancel key, which clients never see.
	secret []byte
	// defaults are the settable reported parameters at connection start,
	// which RESET ALL and DISCARD ALL restore, because backends log in
	// without client settings.
	defaults map[string]string
	// state is the pool's view of the backend; the pool's mu guards it.
	state int
	// closed is set before the proxy closes the connection on purpose, so
	// readLoop ends without reporting an error.
	closed atomic.Bool

	mu    sync.Mutex
	owner *session
	queue responseQueue
	// openBatch is set while extended-protocol messages have been sent
	// since the last Sync: the backend is inside an implicit transaction
	// and its unnamed statement and portals are in use.
	openBatch bool
	// copyIn is set from CopyInResponse until the client's CopyDone or
	// CopyFail. copyInExtended marks a COPY started by Execute: the
	// backend ignores Sync until the copy ends.
	copyIn, copyInExtended bool
	// reported are the current values of every parameter the backend
	// reports with ParameterStatus, under the names it reports.
	reported map[string]string
	// applied are the settings as the proxy has tracked them: the settable
	// reported parameters, by lower-case name, and the unreported ones
	// the proxy set with set_config.
	applied map[string]string
	// prepared maps the names of the statements prepared on the backend
	// to the tick of their last use, for the least recently used one to
	// be closed when there are maxBackendStatements.
	prepared map[string]uint64
	tick     uint64
	// unnamedOwner and unnamedGen identify the client Parse that the
	// backend's unnamed statement comes from.
	unnamedOwner *session
	unnamedGen   uint64
	// cancels counts CancelRequests being delivered for this backend;
	// releaseAfterCancel defers a release until they are done.
	cancels            int
	releaseAfterCancel bool
}

// maxBackendStatements caps the statements the proxy keeps prepared on one
// backend in transaction mode, where clients share them. The least
// recently used statement past the cap is closed; a client that uses it
// again gets it prepared again.
const maxBackendStatements = 500

// unsettableReported lists the reported parameters that clients cannot
// set: the proxy neither tracks them per client nor applies them.
var unsettableReported = map[string]bool{
	"server_version": true, "server_encoding": true, "integer_datetimes": true,
	"is_superuser": true, "session_authorization": true, "in_hot_standby": true,
	"scram_iterations": true,
}

// dialBackend opens a backend connection to the pool's instance as
// key.role, without the client's startup parameters, which the proxy
// applies per client, and takes it over from pgconn for raw relaying.
func dialBackend(ctx context.Context, p *dbPool, key poolKey) (*backend, error) {
	inst := p.inst
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host = inst.SocketDir()
	cfg.Port = inst.SocketPort()
	cfg.User = key.role
	cfg.Database = inst.DatabaseName()
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RuntimeParams = map[string]string{}
	if key.options != "" {
		cfg.RuntimeParams["options"] = key.options
	}
	// pgconn must not run anything on the connection after it opens, as
	// the proxy owns the session from the first byte.
	cfg.AfterConnect = nil
	cfg.ValidateConnect = nil

	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to instance of database %s: %w", inst.ID(), err)
	}
	hijacked, err := conn.Hijack()
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("take over backend connection: %w", err)
	}
	b := &backend{
		pool:     p,
		key:      key,
		conn:     hijacked.Conn,
		r:        bufio.NewReaderSize(hijacked.Conn, 32*1024),
		w:        bufio.NewWriterSize(hijacked.Conn, 32*1024),
		pid:      hijacked.PID,
		secret:   hijacked.SecretKey,
		defaults: map[string]string{},
		reported: hijacked.ParameterStatuses,
		applied:  map[string]string{},
		prepared: map[string]uint64{},
	}
	for name, value := range b.reported {
		if !unsettableReported[strings.ToLower(name)] {
			b.defaults[strings.ToLower(name)] = value
			b.applied[strings.ToLower(name)] = value
		}
	}
	return b, nil
}

// close ends the backend connection with a Terminate message, marking it
// closed first so readLoop stays quiet.
func (b *backend) close() {
	if b.closed.Swap(true) {
		return
	}
	_ = b.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if buf, err := (&pgproto3.Terminate{}).Encode(nil); err == nil {
		_, _ = b.conn.Write(buf)
	}
	_ = b.conn.Close()
}

// broken reports whether the connection was closed.
func (b *backend) broken() bool { return b.closed.Load() }

// currentOwner returns the session the backend is lent to.
func (b *backend) currentOwner() *session {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owner
}

// push records a response the backend owes for a message about to be
// written. mu must be held.
func (b *backend) pushLocked(p pending) {
	b.queue.push(p)
}

// markPreparedLocked records that name is prepared on the backend, and
// returns the least recently used statement to close when the backend
// holds too many. mu must be held.
func (b *backend) markPreparedLocked(name string) (evict string) {
	b.tick++
	b.prepared[name] = b.tick
	if len(b.prepared) <= maxBackendStatements {
		return ""
	}
	oldest := b.tick
	for n, used := range b.prepared {
		if used < oldest {
			oldest, evict = used, n
		}
	}
	delete(b.prepared, evict)
	return evict
}

// forgetStatementsLocked forgets every statement prepared on the backend,
// after DEALLOCATE ALL or DISCARD ALL. mu must be held.
func (b *backend) forgetStatementsLocked() {
	clear(b.prepared)
	b.unnamedOwner = nil
}

// resetSettingsLocked records that RESET ALL (or DISCARD ALL) restored
// the backend's settings to their values at connection start. mu must be
// held.
func (b *backend) resetSettingsLocked() {
	clear(b.applied)
	for name, value := range b.defaults {
		b.applied[name] = value
	}
}

// reset runs DISCARD ALL on a backend whose session-mode client left, so
// that the next client starts from a fresh session, and calls done when
// it succeeded. It returns false when the message could not be written.
func (b *backend) reset(done func()) bool {
	b.mu.Lock()
	b.pushLocked(pending{kind: pendQuery, injected: true, call: &injectedCall{done: func(errResp *pgproto3.ErrorResponse) {
		if errResp != nil {
			b.pool.discard(b)
			return
		}
		b.mu.Lock()
		b.forgetStatementsLocked()
		b.resetSettingsLocked()
		b.mu.Unlock()
		done()
	}}})
	b.mu.Unlock()
	if err := writeQuery(b.w, "DISCARD ALL"); err != nil {
		return false
	}
	return b.w.Flush() == nil
}

// writeQuery writes a simple Query message.
func writeQuery(w *bufio.Writer, sql string) error {
	buf, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}
