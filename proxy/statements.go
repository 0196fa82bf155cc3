package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
)

// maxPreparedBytes caps the total size of one client's named prepared
// statements (their Parse messages), as the real service does per client
// connection.
const maxPreparedBytes = 1 << 20

// preparedLimitMessage is the real service's error text when a client
// exceeds maxPreparedBytes; clients match on it.
const preparedLimitMessage = "failed to prepare statement: adding the prepared statement would exceed the limit of %d bytes for client connection: maximum allowed size of prepared statements for connection reached"

// codeConfigurationLimit is SQLSTATE 53400 (configuration_limit_exceeded).
const codeConfigurationLimit = "53400"

// maxInspectedQuery is the largest simple Query the proxy reads whole to
// look for DEALLOCATE, DISCARD and RESET ALL; longer ones are streamed
// untouched.
const maxInspectedQuery = 64 * 1024

// backendStatementPrefix starts the names of statements the proxy
// prepares on shared backends in transaction mode.
const backendStatementPrefix = "sdb_"

// clientStatement is a named protocol-level prepared statement of one
// client.
type clientStatement struct {
	// definition is the Parse message body after the name: the query
	// text, its terminator, and the parameter type OIDs.
	definition []byte
	// backendName is the statement's name on backends: in transaction
	// mode a name derived from definition, so that clients preparing the
	// same query share one statement per backend; in session mode the
	// client's own name.
	backendName string
	// size is the Parse message's size, counted against maxPreparedBytes.
	size int
	// failed is set by the backend's goroutine when the Parse failed or
	// was skipped: PostgreSQL then has no such statement.
	failed atomic.Bool
}

// preparedStatements are a client's protocol-level prepared statements. The
// proxy prepares them on whichever backend the client gets, just before a
// Bind or Describe needs them, so drivers that cache statements (pgx, JDBC,
// Npgsql, postgres.js) keep working in transaction mode and across
// suspends. Only the client's goroutine touches them.
//
// SQL-level PREPARE is not tracked: a statement prepared with it lives on
// the backend that ran it, which in transaction mode the client keeps only
// until the end of its transaction.
type preparedStatements struct {
	named map[string]*clientStatement
	bytes int
	// unnamed is the definition of the client's last unnamed Parse, and
	// unnamedGen counts those Parses, so a backend can tell whether its
	// unnamed statement is the client's latest.
	unnamed    []byte
	unnamedGen uint64
}

// add records a named Parse. It returns a FATAL error, as the real service
// does, when the client's statements would exceed maxPreparedBytes. A
// second Parse of a name replaces the first, whose Parse may have failed.
func (p *preparedStatements) add(name string, definition []byte, size int, mode PoolMode) (*clientStatement, *wireError) {
	p.remove(name)
	if p.bytes+size > maxPreparedBytes {
		return nil, &wireError{severity: "FATAL", code: codeConfigurationLimit, message: fmt.Sprintf(preparedLimitMessage, maxPreparedBytes)}
	}
	st := &clientStatement{definition: definition, size: size, backendName: name}
	if mode == PoolTransaction {
		sum := sha256.Sum256(definition)
		st.backendName = backendStatementPrefix + hex.EncodeToString(sum[:16])
	}
	if p.named == nil {
		p.named = map[string]*clientStatement{}
	}
	p.named[name] = st
	p.bytes += size
	return st, nil
}

// lookup returns the named statement, or nil when the client has none by
// that name or its Parse failed.
func (p *preparedStatements) lookup(name string) *clientStatement {
	st := p.named[name]
	if st != nil && st.failed.Load() {
		p.remove(name)
		return nil
	}
	return st
}

func (p *preparedStatements) remove(name string) {
	if st, ok := p.named[name]; ok {
		delete(p.named, name)
		p.bytes -= st.size
	}
}

func (p *preparedStatements) clear() {
	*p = preparedStatements{unnamed: p.unnamed, unnamedGen: p.unnamedGen}
}

// queryEffect is the change a simple Query makes to the state the proxy tracks.
type queryEffect uint8

const (
	effectNone queryEffect = iota
	// effectDeallocateAll: DEALLOCATE ALL drops every prepared statement.
	effectDeallocateAll
	// effectResetAll: RESET ALL restores every setting.
	effectResetAll
	// effectDiscardAll: DISCARD ALL does both and more.
	effectDiscardAll
)

// observeQuery forgets the client statements a simple Query deallocates:
// DEALLOCATE [PREPARE] name, DEALLOCATE ALL and DISCARD ALL, and tells the
// caller about the statements that change a backend's state. It reads the
// query text only, so a statement inside a longer multi-statement string
// is missed.
func (p *preparedStatements) observeQuery(body []byte) queryEffect {
	text, ok := cString(body)
	if !ok {
		return effectNone
	}
	words := strings.Fields(strings.TrimRight(strings.TrimSpace(text), "; \t\r\n"))
	if len(words) < 2 {
		return effectNone
	}
	switch strings.ToUpper(words[0]) {
	case "DISCARD":
		if strings.EqualFold(words[1], "ALL") {
			p.clear()
			return effectDiscardAll
		}
	case "RESET":
		if strings.EqualFold(words[1], "ALL") {
			return effectResetAll
		}
	case "DEALLOCATE":
		name := words[1]
		if strings.EqualFold(name, "PREPARE") && len(words) > 2 {
			name = words[2]
		}
		if strings.EqualFold(name, "ALL") {
			p.clear()
			return effectDeallocateAll
		}
		p.remove(strings.Trim(name, `"`))
	}
	return effectNone
}

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) (string, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", false
	}
	return string(b[:i]), true
}
