package proxy

import "github.com/jackc/pgx/v5/pgproto3"

// pendingKind is a message the backend still owes a response to, named by
// the message that asked for it.
type pendingKind uint8

const (
	// pendParse ends with ParseComplete.
	pendParse pendingKind = iota + 1
	// pendBind ends with BindComplete.
	pendBind
	// pendDescribe ends with RowDescription or NoData, after a
	// ParameterDescription for a statement.
	pendDescribe
	// pendExecute ends with CommandComplete, EmptyQueryResponse or
	// PortalSuspended; a COPY in between streams CopyData.
	pendExecute
	// pendClose ends with CloseComplete.
	pendClose
	// pendSync ends with ReadyForQuery.
	pendSync
	// pendQuery is a simple Query or a FunctionCall, which end with
	// ReadyForQuery.
	pendQuery
	// pendCopyDone marks where the client ended a COPY FROM STDIN with
	// CopyDone or CopyFail. It gets no response of its own. It shows
	// which Syncs the backend ignored because they came during the copy.
	pendCopyDone
)

// endsWithReady reports whether the kind's response is ReadyForQuery.
func (k pendingKind) endsWithReady() bool { return k == pendSync || k == pendQuery }

// pending is one expected response.
type pending struct {
	kind pendingKind
	// injected marks a message the proxy sent on its own: its response
	// is not forwarded, except an ErrorResponse to a Parse, Bind or
	// Execute, which the client must see because it fails the client's
	// next message.
	injected bool
	// stmt is the client statement a client Parse creates; it is marked
	// failed when the Parse fails or is skipped after an earlier error.
	stmt *clientStatement
	// name is the statement name a Parse uses on the backend.
	name string
	// call collects the outcome of an injected query.
	call *injectedCall
}

// injectedCall is an injected query: the proxy's set_config at checkout,
// or DISCARD ALL before a session-mode backend is reused.
type injectedCall struct {
	// err is the query's first ErrorResponse.
	err *pgproto3.ErrorResponse
	// done, when set, runs on the backend's goroutine at the query's
	// ReadyForQuery.
	done func(err *pgproto3.ErrorResponse)
}

// responseQueue is a FIFO of pending responses, in the order the backend
// will answer them.
type responseQueue struct {
	items []pending
	head  int
}

func (q *responseQueue) push(p pending) {
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	q.items = append(q.items, p)
}

func (q *responseQueue) len() int { return len(q.items) - q.head }

// front returns the oldest entry, after dropping pendCopyDone markers
// that reached the front: their copy has ended and they mean nothing
// more.
func (q *responseQueue) front() *pending {
	for q.head < len(q.items) && q.items[q.head].kind == pendCopyDone {
		q.popEntry()
	}
	if q.head == len(q.items) {
		return nil
	}
	return &q.items[q.head]
}

func (q *responseQueue) pop() pending { return q.popEntry() }

func (q *responseQueue) popEntry() pending {
	p := q.items[q.head]
	q.items[q.head] = pending{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return p
}

// removeAt deletes the entry i places behind the front.
func (q *responseQueue) removeAt(i int) {
	at := q.head + i
	copy(q.items[at:], q.items[at+1:])
	q.items[len(q.items)-1] = pending{}
	q.items = q.items[:len(q.items)-1]
}

// at returns the entry i places behind the front.
func (q *responseQueue) at(i int) *pending { return &q.items[q.head+i] }
