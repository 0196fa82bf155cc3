package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxStatementName bounds the statement and portal names the proxy reads
// from Bind, Describe and Close.
const maxStatementName = 4096

// errClientGone ends the relay when the client hung up mid-message.
var errClientGone = errors.New("client closed the connection")

// relayClient forwards client messages to backends until the client ends
// the session or an error occurs. It decodes only the messages whose
// statement names it maps (Parse, Bind, Describe, Close) and short simple
// Queries. Everything else is forwarded by header and length, and large
// bodies are streamed.
func (s *session) relayClient() error {
	err := s.relayMessages()
	if errors.Is(err, errClientGone) {
		return nil
	}
	return err
}

func (s *session) relayMessages() error {
	var header [5]byte
	for {
		if err := s.readHeader(&header); err != nil {
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
		s.stopIdleTimer()
		s.pool.metrics.receivedBytes.Add(float64(1 + length))
		body := int64(length - 4)
		if !knownFrontendMessage(msgType) {
			return fatalf(codeProtocolViolation, "invalid frontend message type %d", msgType)
		}

		if (msgType == 'Q' || msgType == 'P') && body > maxRequestBytes {
			if err := s.refuseOversized(msgType, body); err != nil {
				return err
			}
			continue
		}

		if !s.needsBackend(msgType) {
			if err := s.answerWithoutBackend(msgType, body); err != nil {
				return err
			}
			continue
		}
		b, err := s.acquireBackend()
		if err != nil {
			if werr, ok := asWireError(err); ok && werr.severity == "ERROR" {
				if err := s.refuseRequest(msgType, body, werr); err != nil {
					return err
				}
				continue
			}
			return err
		}
		err = s.relayMessage(b, header, body)
		if err == nil && s.br.Buffered() == 0 {
			if ferr := b.w.Flush(); ferr != nil {
				err = s.backendWriteFailed(ferr)
			}
		}
		s.unclaim()
		if err != nil {
			return err
		}
	}
}

// knownFrontendMessage reports whether t is a message type a client may
// send after login.
func knownFrontendMessage(t byte) bool {
	switch t {
	case 'Q', 'P', 'B', 'D', 'E', 'C', 'H', 'S', 'F', 'd', 'c', 'f':
		return true
	}
	return false
}

// needsBackend reports whether a message needs a backend. An idle client
// needs none for a Flush, for CopyData, CopyDone and CopyFail left over
// from a failed COPY (PostgreSQL ignores those outside a copy), or, in
// transaction mode, for a Sync, to which the proxy replies itself.
func (s *session) needsBackend(msgType byte) bool {
	switch msgType {
	case 'H', 'd', 'c', 'f', 'S':
	default:
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy || (s.backend != nil && msgType == 'S') {
		return true
	}
	return false
}

// answerWithoutBackend consumes a message needsBackend turned down, and
// replies to a Sync with ReadyForQuery.
func (s *session) answerWithoutBackend(msgType byte, body int64) error {
	if err := s.discardBody(body); err != nil {
		return err
	}
	if msgType == 'S' {
		return s.sendMessages(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	}
	return nil
}

func (s *session) discardBody(body int64) error {
	if _, err := s.br.Discard(int(body)); err != nil {
		return errClientGone
	}
	return nil
}

// readBody reads a whole message body.
func (s *session) readBody(body int64) ([]byte, error) {
	buf := make([]byte, body)
	if _, err := io.ReadFull(s.br, buf); err != nil {
		return nil, errClientGone
	}
	return buf, nil
}

// refuseRequest replies with werr to a message the proxy could not
// forward for want of a backend, keeping the protocol in step. After an
// extended-protocol message it discards the client's messages up to the
// next Sync, as PostgreSQL does after an error, and then sends
// ReadyForQuery.
func (s *session) refuseRequest(msgType byte, body int64, werr *wireError) error {
	s.logger.Info("request refused", "sqlstate", werr.code, "reason", werr.message)
	if err := s.discardBody(body); err != nil {
		return err
	}
	if err := s.sendMessages(werr.toMessage()); err != nil {
		return errClientGone
	}
	switch msgType {
	case 'Q', 'F', 'S':
	default:
		if err := s.skipUntilSync(); err != nil {
			return err
		}
	}
	return s.sendMessages(&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

// skipUntilSync discards client messages up to and including the next
// Sync.
func (s *session) skipUntilSync() error {
	var header [5]byte
	for {
		if _, err := io.ReadFull(s.br, header[:]); err != nil {
			return errClientGone
		}
		length := binary.BigEndian.Uint32(header[1:])
		if length < 4 || length > maxMessage {
			return fatalf(codeProtocolViolation, "invalid message length %d for message type %q", length, header[0])
		}
		if header[0] == 'X' {
			return errClientGone
		}
		if err := s.discardBody(int64(length - 4)); err != nil {
			return err
		}
		if header[0] == 'S' {
			return nil
		}
	}
}

// refuseOversized rejects a Query or Parse over maxRequestBytes with ERROR
// 54000, reading it only to discard it. When the client holds a backend,
// the backend raises the error itself, so that an open transaction fails
// as PostgreSQL would fail it and ReadyForQuery carries the right status.
// The refused Parse never counts toward the prepared-statement budget.
func (s *session) refuseOversized(msgType byte, body int64) error {
	message := fmt.Sprintf("request of %d bytes exceeds the maximum of %d bytes", body+5, maxRequestBytes)
	s.logger.Info("request refused", "sqlstate", codeProgramLimitExceeded, "reason", message)

	s.mu.Lock()
	b := s.backend
	held := s.busy && b != nil
	if held {
		s.claimed = true
	}
	s.mu.Unlock()
	if !held {
		werr := errorf(codeProgramLimitExceeded, "%s", message).
			withHint("Split the statement, or send large values as parameters of a prepared statement.")
		return s.refuseRequest(msgType, body, werr)
	}
	defer s.unclaim()
	if err := s.discardBody(body); err != nil {
		return err
	}
	raise := fmt.Sprintf("DO $sdblocal$BEGIN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = '%s', HINT = 'Split the statement, or send large values as parameters of a prepared statement.'; END$sdblocal$",
		codeProgramLimitExceeded, message)
	var buf []byte
	b.mu.Lock()
	if msgType == 'Q' {
		b.pushLocked(pending{kind: pendQuery})
		buf, _ = (&pgproto3.Query{String: raise}).Encode(nil)
	} else {
		// In the middle of an extended-protocol batch: the failing
		// Execute makes the backend skip the client's next messages up
		// to Sync, as the refused Parse would have.
		b.pushLocked(pending{kind: pendParse, injected: true})
		b.pushLocked(pending{kind: pendBind, injected: true})
		b.pushLocked(pending{kind: pendExecute})
		b.unnamedOwner = nil
		b.openBatch = true
		buf, _ = (&pgproto3.Parse{Query: raise}).Encode(buf)
		buf, _ = (&pgproto3.Bind{}).Encode(buf)
		buf, _ = (&pgproto3.Execute{}).Encode(buf)
	}
	b.mu.Unlock()
	if _, err := b.w.Write(buf); err != nil {
		return s.backendWriteFailed(err)
	}
	if err := b.w.Flush(); err != nil {
		return s.backendWriteFailed(err)
	}
	return nil
}

// relayMessage forwards one client message to b, recording the response
// it expects.
func (s *session) relayMessage(b *backend, header [5]byte, body int64) error {
	switch header[0] {
	case 'P':
		return s.relayParse(b, body)
	case 'B':
		return s.relayBind(b, header, body)
	case 'D':
		return s.relayDescribe(b, body)
	case 'C':
		return s.relayClose(b, body)
	case 'Q':
		return s.relayQuery(b, header, body)
	case 'E':
		s.pool.metrics.queries.Inc()
		s.expect(b, pending{kind: pendExecute}, true)
	case 'F':
		s.pool.metrics.queries.Inc()
		s.expect(b, pending{kind: pendQuery}, false)
	case 'S':
		b.mu.Lock()
		if !(b.copyIn && b.copyInExtended) {
			b.pushLocked(pending{kind: pendSync})
			b.openBatch = false
		}
		b.mu.Unlock()
	case 'c', 'f':
		b.mu.Lock()
		if b.copyIn {
			b.copyIn = false
		} else {
			b.pushLocked(pending{kind: pendCopyDone})
		}
		b.mu.Unlock()
	}
	return s.forward(b, header, body)
}

// expect records one pending response; batch marks an extended-protocol
// message, which opens a batch until Sync.
func (s *session) expect(b *backend, p pending, batch bool) {
	b.mu.Lock()
	b.pushLocked(p)
	if batch {
		b.openBatch = true
	}
	b.mu.Unlock()
}

// forward copies one client message to the backend, small bodies in one
// write and large ones streamed. The caller flushes once the client has
// nothing more queued, so pipelined messages travel together.
func (s *session) forward(b *backend, header [5]byte, body int64) error {
	if _, err := b.w.Write(header[:]); err != nil {
		return s.backendWriteFailed(err)
	}
	if body == 0 {
		return nil
	}
	if _, err := io.CopyN(b.w, s.br, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errClientGone
		}
		return s.backendWriteFailed(err)
	}
	return nil
}

// relayQuery forwards a simple Query, reading short ones whole to notice
// DEALLOCATE, DISCARD ALL and RESET ALL.
func (s *session) relayQuery(b *backend, header [5]byte, body int64) error {
	s.pool.metrics.queries.Inc()
	if body > maxInspectedQuery {
		s.expect(b, pending{kind: pendQuery}, false)
		return s.forward(b, header, body)
	}
	raw, err := s.readBody(body)
	if err != nil {
		return err
	}
	effect := s.stmts.observeQuery(raw)
	b.mu.Lock()
	switch effect {
	case effectDeallocateAll:
		b.forgetStatementsLocked()
	case effectResetAll:
		b.resetSettingsLocked()
	case effectDiscardAll:
		b.forgetStatementsLocked()
		b.resetSettingsLocked()
	}
	b.pushLocked(pending{kind: pendQuery})
	b.mu.Unlock()
	return s.write(b, header[:], raw)
}

// write writes parts to the backend.
func (s *session) write(b *backend, parts ...[]byte) error {
	for _, part := range parts {
		if _, err := b.w.Write(part); err != nil {
			return s.backendWriteFailed(err)
		}
	}
	return nil
}

// relayParse forwards a Parse. A named statement is recorded against the
// client's budget and renamed to its backend name. An unnamed one is
// remembered, so a later Bind on another backend can prepare it there.
func (s *session) relayParse(b *backend, body int64) error {
	raw, err := s.readBody(body)
	if err != nil {
		return err
	}
	name, ok := cString(raw)
	if !ok {
		return fatalf(codeProtocolViolation, "invalid Parse message: unterminated statement name")
	}
	definition := raw[len(name)+1:]

	if name == "" {
		s.stmts.unnamed = definition
		s.stmts.unnamedGen++
		b.mu.Lock()
		b.unnamedOwner, b.unnamedGen = s, s.stmts.unnamedGen
		b.pushLocked(pending{kind: pendParse})
		b.openBatch = true
		b.mu.Unlock()
		return s.write(b, messageHeader('P', len(raw)), raw)
	}

	st, werr := s.stmts.add(name, definition, int(body)+5, s.mode)
	if werr != nil {
		return werr
	}
	b.mu.Lock()
	// In transaction mode another client may have prepared the same
	// statement on this backend: close it first, as a Parse of an
	// existing name fails.
	closeFirst := s.mode == PoolTransaction && b.prepared[st.backendName] != 0
	if closeFirst {
		b.pushLocked(pending{kind: pendClose, injected: true})
	}
	evict := b.markPreparedLocked(st.backendName)
	if evict != "" {
		b.pushLocked(pending{kind: pendClose, injected: true})
	}
	b.pushLocked(pending{kind: pendParse, stmt: st, name: st.backendName})
	b.openBatch = true
	b.mu.Unlock()

	if closeFirst {
		if err := s.write(b, closeMessage(st.backendName)); err != nil {
			return err
		}
	}
	if evict != "" {
		if err := s.write(b, closeMessage(evict)); err != nil {
			return err
		}
	}
	if st.backendName == name {
		return s.write(b, messageHeader('P', len(raw)), raw)
	}
	return s.write(b, parseMessage(st.backendName, definition))
}

// relayBind forwards a Bind, after preparing its statement on b if b lacks
// it, and with the statement's backend name. The parameter values after
// the names are streamed.
func (s *session) relayBind(b *backend, header [5]byte, body int64) error {
	portal, err := s.readName(&body)
	if err != nil {
		return err
	}
	stmtBytes, err := s.readName(&body)
	if err != nil {
		return err
	}
	stmt := string(stmtBytes)
	target, err := s.ensurePrepared(b, stmt)
	if err != nil {
		return err
	}
	s.expect(b, pending{kind: pendBind}, true)
	if target == stmt {
		if err := s.write(b, header[:], portal, []byte{0}, []byte(stmt), []byte{0}); err != nil {
			return err
		}
	} else {
		size := len(portal) + 1 + len(target) + 1 + int(body)
		if err := s.write(b, messageHeader('B', size), portal, []byte{0}, []byte(target), []byte{0}); err != nil {
			return err
		}
	}
	if _, err := io.CopyN(b.w, s.br, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errClientGone
		}
		return s.backendWriteFailed(err)
	}
	return nil
}

// relayDescribe forwards a Describe, preparing and renaming a statement
// as relayBind does; portals keep their names.
func (s *session) relayDescribe(b *backend, body int64) error {
	raw, err := s.readBody(body)
	if err != nil {
		return err
	}
	name, ok := cString(raw[min(1, len(raw)):])
	if len(raw) < 2 || !ok {
		return fatalf(codeProtocolViolation, "invalid Describe message")
	}
	target := name
	if raw[0] == 'S' {
		if target, err = s.ensurePrepared(b, name); err != nil {
			return err
		}
	}
	s.expect(b, pending{kind: pendDescribe}, true)
	if target == name {
		return s.write(b, messageHeader('D', len(raw)), raw)
	}
	return s.write(b, messageHeader('D', 1+len(target)+1), raw[:1], []byte(target), []byte{0})
}

// relayClose forwards a Close unchanged. The client's statement is
// dropped, but in transaction mode the backend keeps its copy, shared with
// other clients. PostgreSQL replies CloseComplete to the Close of a name
// it does not have, so the client sees no difference.
func (s *session) relayClose(b *backend, body int64) error {
	raw, err := s.readBody(body)
	if err != nil {
		return err
	}
	name, ok := cString(raw[min(1, len(raw)):])
	if len(raw) < 2 || !ok {
		return fatalf(codeProtocolViolation, "invalid Close message")
	}
	b.mu.Lock()
	if raw[0] == 'S' {
		switch {
		case name == "":
			s.stmts.unnamed = nil
			if b.unnamedOwner == s {
				b.unnamedOwner = nil
			}
		default:
			s.stmts.remove(name)
			if s.mode == PoolSession {
				delete(b.prepared, name)
			}
		}
	}
	b.pushLocked(pending{kind: pendClose})
	b.openBatch = true
	b.mu.Unlock()
	return s.write(b, messageHeader('C', len(raw)), raw)
}

// ensurePrepared prepares the client's statement name on b when b lacks
// it, ahead of the message that uses it, and returns the name to use on
// b. A name the client never prepared passes unchanged, for PostgreSQL to
// report.
func (s *session) ensurePrepared(b *backend, name string) (string, error) {
	if name == "" {
		b.mu.Lock()
		current := b.unnamedOwner == s && b.unnamedGen == s.stmts.unnamedGen
		if current || s.stmts.unnamed == nil {
			b.mu.Unlock()
			return "", nil
		}
		b.unnamedOwner, b.unnamedGen = s, s.stmts.unnamedGen
		b.pushLocked(pending{kind: pendParse, injected: true})
		b.mu.Unlock()
		return "", s.write(b, parseMessage("", s.stmts.unnamed))
	}

	st := s.stmts.lookup(name)
	if st == nil {
		return name, nil
	}
	b.mu.Lock()
	if _, ok := b.prepared[st.backendName]; ok {
		b.tick++
		b.prepared[st.backendName] = b.tick
		b.mu.Unlock()
		return st.backendName, nil
	}
	// The Close makes the Parse safe even when the proxy forgot a
	// statement the backend still has (after DISCARD ALL inside a
	// transaction block, which fails).
	evict := b.markPreparedLocked(st.backendName)
	b.pushLocked(pending{kind: pendClose, injected: true})
	if evict != "" {
		b.pushLocked(pending{kind: pendClose, injected: true})
	}
	b.pushLocked(pending{kind: pendParse, injected: true, name: st.backendName})
	b.openBatch = true
	b.mu.Unlock()
	if evict != "" {
		if err := s.write(b, closeMessage(evict)); err != nil {
			return "", err
		}
	}
	return st.backendName, s.write(b, closeMessage(st.backendName), parseMessage(st.backendName, st.definition))
}

// readName reads a NUL-terminated name from the client, counting it
// against the remaining body.
func (s *session) readName(body *int64) ([]byte, error) {
	line, err := s.br.ReadSlice(0)
	if errors.Is(err, bufio.ErrBufferFull) || (err == nil && len(line) > maxStatementName) {
		return nil, fatalf(codeProtocolViolation, "invalid message: name longer than %d bytes", maxStatementName)
	}
	if err != nil {
		return nil, errClientGone
	}
	if int64(len(line)) > *body {
		return nil, fatalf(codeProtocolViolation, "invalid message format")
	}
	*body -= int64(len(line))
	return append([]byte(nil), line[:len(line)-1]...), nil
}

// messageHeader returns a message header for a body of size bytes.
func messageHeader(msgType byte, size int) []byte {
	header := make([]byte, 5)
	header[0] = msgType
	binary.BigEndian.PutUint32(header[1:], uint32(size+4))
	return header
}

// parseMessage returns a Parse of definition (query text, terminator and
// parameter types) under name.
func parseMessage(name string, definition []byte) []byte {
	msg := messageHeader('P', len(name)+1+len(definition))
	msg = append(msg, name...)
	msg = append(msg, 0)
	return append(msg, definition...)
}

// closeMessage returns a Close of the statement name.
func closeMessage(name string) []byte {
	msg := messageHeader('C', 1+len(name)+1)
	msg = append(msg, 'S')
	msg = append(msg, name...)
	return append(msg, 0)
}
