package autoscale

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrExclusive is wrapped by the error Begin returns while TakeExclusive
// holds the instance, and by the error of a second TakeExclusive.
var ErrExclusive = errors.New("database is held for maintenance")

// Exclusive is a hold on a running instance that keeps client sessions
// out, for work that replaces the database's contents. Release ends it,
// and calls after the first do nothing.
type Exclusive struct {
	inst *Instance
	once sync.Once
}

// TakeExclusive wakes the instance and keeps it running, ends every client
// session with FATAL 57P01 "terminating connection because database <id>
// <reason>", and makes Begin fail with "database <id> <reason>" until
// Release. reason reads like "is being restored". The sessions have
// received their error and lost their client connection when it returns,
// but their backends may take a moment longer to exit. Only one hold may
// exist at a time.
func (i *Instance) TakeExclusive(ctx context.Context, reason string) (*Exclusive, error) {
	// Begin first, because Begin refuses everyone once the hold is set.
	if err := i.Begin(ctx); err != nil {
		return nil, err
	}
	i.mu.Lock()
	if i.exclusive != nil {
		err := i.exclusive
		i.mu.Unlock()
		i.End()
		return nil, fmt.Errorf("take database %s exclusively: %w", i.id, err)
	}
	i.exclusive = fmt.Errorf("database %s %s: %w", i.id, reason, ErrExclusive)
	clients := make([]Client, 0, len(i.clients))
	for c := range i.clients {
		clients = append(clients, c)
	}
	i.mu.Unlock()

	// Terminate bounds its write to a client, so a client that stopped
	// reading delays this by at most that bound.
	message := fmt.Sprintf("terminating connection because database %s %s", i.id, reason)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.Terminate("57P01", message) })
	}
	wg.Wait()
	if len(clients) > 0 {
		i.logger.Info("client sessions ended for exclusive use", "sessions", len(clients), "reason", reason)
	}
	return &Exclusive{inst: i}, nil
}

// Release lets clients in again and ends the hold's Begin, so the instance
// suspends by the usual idle rule.
func (x *Exclusive) Release() {
	x.once.Do(func() {
		x.inst.mu.Lock()
		x.inst.exclusive = nil
		x.inst.mu.Unlock()
		x.inst.End()
	})
}
