package proxy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
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
// look for DEALLOCATE and DISCARD; longer ones are streamed untouched.
const maxInspectedQuery = 64 * 1024

// preparedStatements are a client's named protocol-level prepared
// statements: the raw Parse message of each, in the order they were
// prepared. A backend that replaces one lost in a suspend gets them again
// before the client's next message, so drivers that cache statements
// (pgx, JDBC, Npgsql) keep working across suspends.
//
// SQL-level PREPARE is not tracked: statements prepared with it are lost
// when the backend changes.
type preparedStatements struct {
	order []string
	parse map[string][]byte
	bytes int
}

// add records a Parse message. It returns a FATAL error when the client's
// statements would exceed maxPreparedBytes.
func (p *preparedStatements) add(message []byte) *wireError {
	name, ok := cString(message[5:])
	if !ok {
		return fatalf(codeProtocolViolation, "invalid Parse message: unterminated statement name")
	}
	if name == "" {
		return nil // the unnamed statement lives only until the next Parse
	}
	if p.parse == nil {
		p.parse = map[string][]byte{}
	}
	// NOTE: the proxy does not read the backend's reply to a Parse, so a
	// Parse that failed is tracked too. A second Parse of the same name
	// replaces the first: the usual reason for one is a retry after a
	// failure, and PostgreSQL rejects it when the first one succeeded.
	p.remove(name)
	if p.bytes+len(message) > maxPreparedBytes {
		return &wireError{severity: "FATAL", code: codeConfigurationLimit, message: fmt.Sprintf(preparedLimitMessage, maxPreparedBytes)}
	}
	p.parse[name] = append([]byte(nil), message...)
	p.order = append(p.order, name)
	p.bytes += len(message)
	return nil
}

// close forgets the statement a Close message names, if it is one.
func (p *preparedStatements) close(message []byte) {
	body := message[5:]
	if len(body) < 2 || body[0] != 'S' {
		return
	}
	if name, ok := cString(body[1:]); ok {
		p.remove(name)
	}
}

func (p *preparedStatements) remove(name string) {
	old, ok := p.parse[name]
	if !ok {
		return
	}
	delete(p.parse, name)
	p.bytes -= len(old)
	for i, n := range p.order {
		if n == name {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

// observeQuery forgets statements a simple Query deallocates: DEALLOCATE
// [PREPARE] name, DEALLOCATE ALL and DISCARD ALL. It reads the query text
// only, so a statement inside a longer multi-statement string is missed.
func (p *preparedStatements) observeQuery(message []byte) {
	text, ok := cString(message[5:])
	if !ok {
		return
	}
	words := strings.Fields(strings.TrimRight(strings.TrimSpace(text), ";"))
	if len(words) < 2 {
		return
	}
	switch strings.ToUpper(words[0]) {
	case "DISCARD":
		if strings.EqualFold(words[1], "ALL") {
			*p = preparedStatements{}
		}
	case "DEALLOCATE":
		name := words[1]
		if strings.EqualFold(name, "PREPARE") && len(words) > 2 {
			name = words[2]
		}
		if strings.EqualFold(name, "ALL") {
			*p = preparedStatements{}
			return
		}
		p.remove(strings.Trim(name, `"`))
	}
}

// replay prepares every tracked statement on a new backend, each Parse in
// its own Sync so one failure (a table dropped since) does not stop the
// others. The client then finds its statements where it left them; one
// that fails to prepare again fails when the client uses it.
func (p *preparedStatements) replay(b *backend) error {
	if len(p.order) == 0 {
		return nil
	}
	sync := []byte{'S', 0, 0, 0, 4}
	for _, name := range p.order {
		if _, err := b.w.Write(p.parse[name]); err != nil {
			return err
		}
		if _, err := b.w.Write(sync); err != nil {
			return err
		}
	}
	if err := b.w.Flush(); err != nil {
		return err
	}
	for remaining := len(p.order); remaining > 0; {
		var header [5]byte
		if _, err := io.ReadFull(b.r, header[:]); err != nil {
			return err
		}
		length := int64(uint32(header[1])<<24 | uint32(header[2])<<16 | uint32(header[3])<<8 | uint32(header[4]))
		if length < 4 {
			return fmt.Errorf("backend sent invalid message length %d", length)
		}
		if _, err := io.CopyN(io.Discard, b.r, length-4); err != nil {
			return err
		}
		if header[0] == 'Z' {
			remaining--
		}
	}
	return nil
}

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) (string, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", false
	}
	return string(b[:i]), true
}
