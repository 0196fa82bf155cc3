package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxDecodedBackendMessage bounds the ErrorResponse and ParameterStatus
// bodies the proxy decodes; longer ones are forwarded undecoded.
const maxDecodedBackendMessage = 64 * 1024

// errBackendEnded stops readLoop after a FATAL error the client need not
// see.
var errBackendEnded = errors.New("backend ended")

// readLoop reads the backend until the connection ends. It decodes only
// the messages the proxy acts on: ReadyForQuery, ErrorResponse,
// ParameterStatus and the completions of pending messages. Everything else
// is copied to the owner by header and length.
func (b *backend) readLoop() {
	var header [5]byte
	sawFatal := false
	for {
		_, err := io.ReadFull(b.r, header[:])
		if err == nil {
			length := binary.BigEndian.Uint32(header[1:])
			if length < 4 || length > maxMessage {
				err = fmt.Errorf("backend sent invalid message length %d", length)
			} else {
				var fatal bool
				fatal, err = b.dispatch(header, int(length-4))
				sawFatal = sawFatal || fatal
			}
		}
		if err != nil {
			b.lost(err, sawFatal)
			return
		}
	}
}

// dispatch handles one backend message whose header has been read.
func (b *backend) dispatch(header [5]byte, body int) (fatal bool, err error) {
	switch header[0] {
	case 'Z':
		return false, b.onReadyForQuery(header, body)
	case 'E':
		return b.onError(header, body)
	case 'S':
		return false, b.onParameterStatus(header, body)
	case '1', '2', '3', 'n', 's', 'C', 'I', 'T':
		return false, b.onCompletion(header, body)
	case 'G':
		return false, b.onCopyIn(header, body)
	}
	b.mu.Lock()
	owner := b.owner
	swallow := b.inInjectedQueryLocked()
	b.mu.Unlock()
	return false, b.relay(owner, header, body, swallow)
}

// inInjectedQueryLocked reports whether the backend is running an injected
// query, whose output the client must not see. mu must be held.
func (b *backend) inInjectedQueryLocked() bool {
	f := b.queue.front()
	return f != nil && f.kind == pendQuery && f.injected
}

// relay copies one message to owner, or discards it when swallow is set or
// no session owns the backend.
func (b *backend) relay(owner *session, header [5]byte, body int, swallow bool) error {
	if swallow || owner == nil {
		_, err := b.r.Discard(body)
		return err
	}
	return owner.writeFromBackend(b, header, body)
}

// onCompletion pops the pending message that a completion ends.
func (b *backend) onCompletion(header [5]byte, body int) error {
	b.mu.Lock()
	swallow := b.inInjectedQueryLocked()
	if f := b.queue.front(); f != nil && !swallow {
		var answers pendingKind
		switch header[0] {
		case '1':
			answers = pendParse
		case '2':
			answers = pendBind
		case '3':
			answers = pendClose
		case 'n', 'T':
			answers = pendDescribe
		case 'C', 'I', 's':
			answers = pendExecute
		}
		if f.kind == answers {
			swallow = f.injected
			b.queue.pop()
		}
	}
	owner := b.owner
	b.mu.Unlock()
	return b.relay(owner, header, body, swallow)
}

// onCopyIn notes a COPY FROM STDIN. An extended-protocol COPY makes the
// backend ignore every Sync until the client's CopyDone or CopyFail, so
// those Syncs will get no ReadyForQuery.
func (b *backend) onCopyIn(header [5]byte, body int) error {
	b.mu.Lock()
	if f := b.queue.front(); f != nil && (f.kind == pendExecute || f.kind == pendQuery) {
		extended := f.kind == pendExecute
		found := false
		for i := 1; i < b.queue.len(); {
			e := b.queue.at(i)
			if e.kind == pendCopyDone {
				b.queue.removeAt(i)
				found = true
				break
			}
			if extended && e.kind == pendSync {
				b.queue.removeAt(i)
				continue
			}
			i++
		}
		if !found {
			b.copyIn, b.copyInExtended = true, extended
		}
	}
	owner := b.owner
	b.mu.Unlock()
	return b.relay(owner, header, body, false)
}

// onError forwards an ErrorResponse. After an error in the extended
// protocol the backend skips messages until Sync, so the pending
// responses before the next Sync are dropped, and statements whose Parse
// was skipped are forgotten.
func (b *backend) onError(header [5]byte, body int) (fatal bool, err error) {
	if body > maxDecodedBackendMessage {
		b.mu.Lock()
		owner := b.owner
		b.mu.Unlock()
		return false, b.relay(owner, header, body, false)
	}
	raw := make([]byte, body)
	if _, err := io.ReadFull(b.r, raw); err != nil {
		return false, err
	}
	var msg pgproto3.ErrorResponse
	if err := msg.Decode(raw); err != nil {
		return false, fmt.Errorf("backend sent an invalid ErrorResponse: %w", err)
	}
	fatal = msg.Severity == "FATAL" || msg.Severity == "PANIC"

	b.mu.Lock()
	b.copyIn = false
	owner := b.owner
	if f := b.queue.front(); f != nil && f.kind == pendQuery && f.injected {
		if f.call != nil && f.call.err == nil {
			f.call.err = &msg
		}
		b.mu.Unlock()
		if fatal {
			return true, errBackendEnded
		}
		return false, nil
	}
	for f := b.queue.front(); f != nil && !f.kind.endsWithReady(); f = b.queue.front() {
		b.failPendingLocked(b.queue.pop())
	}
	b.mu.Unlock()

	if owner != nil && !owner.holds(b) {
		// The owner gave b back to the pool a moment ago.
		owner = nil
	}
	if fatal && (owner == nil || owner.idleWith(b)) {
		// The instance ended a backend no client waits on (a crash,
		// pg_terminate_backend, a shutdown): the pool drops it, and an
		// idle client gets a new one on its next message.
		b.pool.srv.cfg.Logger.Info("backend ended by the instance while idle",
			"database_id", b.pool.inst.ID(), "backend_pid", b.pid, "sqlstate", msg.Code, "reason", msg.Message)
		if owner != nil {
			b.mu.Lock()
			b.owner = nil
			b.mu.Unlock()
			owner.backendLost(b, errBackendEnded, false)
		}
		return false, errBackendEnded
	}
	if owner == nil {
		return fatal, nil
	}
	return fatal, owner.writeRawFromBackend(header, raw)
}

// failPendingLocked forgets what a pending Parse would have created, for a
// Parse that failed or that the backend skipped. mu must be held.
func (b *backend) failPendingLocked(p pending) {
	if p.kind != pendParse {
		return
	}
	if p.name == "" {
		b.unnamedOwner = nil
	} else {
		delete(b.prepared, p.name)
	}
	if p.stmt != nil {
		p.stmt.failed.Store(true)
	}
}

// onParameterStatus records a parameter the backend reports, and forwards
// it unless an injected query caused it, so that the client gets only
// values that differ from those it was sent before.
func (b *backend) onParameterStatus(header [5]byte, body int) error {
	if body > maxDecodedBackendMessage {
		b.mu.Lock()
		owner := b.owner
		b.mu.Unlock()
		return b.relay(owner, header, body, false)
	}
	raw := make([]byte, body)
	if _, err := io.ReadFull(b.r, raw); err != nil {
		return err
	}
	var msg pgproto3.ParameterStatus
	if err := msg.Decode(raw); err != nil {
		return fmt.Errorf("backend sent an invalid ParameterStatus: %w", err)
	}
	lower := strings.ToLower(msg.Name)
	settable := !unsettableReported[lower]

	b.mu.Lock()
	b.reported[msg.Name] = msg.Value
	if settable {
		b.applied[lower] = msg.Value
	}
	owner := b.owner
	injected := b.inInjectedQueryLocked()
	b.mu.Unlock()
	if owner == nil {
		return nil
	}
	return owner.onParameterStatus(msg.Name, lower, msg.Value, settable, injected, header, raw)
}

// onReadyForQuery ends the pending Sync or Query, and everything before
// it that the backend skipped after an error.
func (b *backend) onReadyForQuery(header [5]byte, body int) error {
	if body != 1 {
		return fmt.Errorf("backend sent ReadyForQuery with a %d-byte body", body)
	}
	status, err := b.r.ReadByte()
	if err != nil {
		return err
	}

	b.mu.Lock()
	var ended pending
	for b.queue.len() > 0 {
		p := b.queue.pop()
		if p.kind.endsWithReady() {
			ended = p
			break
		}
		b.failPendingLocked(p)
	}
	owner := b.owner
	b.mu.Unlock()

	if ended.injected {
		if ended.call != nil && ended.call.done != nil {
			ended.call.done(ended.call.err)
		}
		return nil
	}
	if owner == nil {
		return nil
	}
	owner.onReadyForQuery(b, header, status)
	return nil
}

// lost handles the end of the connection: the pool drops the backend, and
// its owner, if any, decides what the client sees.
func (b *backend) lost(err error, sawFatal bool) {
	closedByProxy := b.broken()
	b.mu.Lock()
	owner := b.owner
	b.owner = nil
	var calls []*injectedCall
	for b.queue.len() > 0 {
		if p := b.queue.pop(); p.call != nil && p.call.done != nil {
			calls = append(calls, p.call)
		}
	}
	b.mu.Unlock()
	b.pool.discard(b)
	for _, call := range calls {
		if call.err == nil {
			call.err = &pgproto3.ErrorResponse{Severity: "FATAL", Code: codeConnectionFailure, Message: "backend connection lost"}
		}
		call.done(call.err)
	}
	if owner != nil && !closedByProxy {
		owner.backendLost(b, err, sawFatal)
	}
}
