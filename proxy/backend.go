package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sdblocal/sdblocal/autoscale"
)

// backend is the proxy's connection to an instance on behalf of one client.
type backend struct {
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	pid    uint32
	secret []byte
	// parameters are the ParameterStatus values the server reported at
	// connection start.
	parameters map[string]string
	// detached is set before the proxy closes the connection on purpose,
	// so the reader goroutine ends without reporting an error.
	detached atomic.Bool
}

// excludedStartupParams are startup parameters the proxy consumes instead
// of passing them to the instance.
var excludedStartupParams = map[string]bool{
	"user": true, "database": true, "options": true, "replication": true,
}

// dialBackend opens a backend connection to inst as role, with the client's
// startup parameters, and takes it over from pgconn for raw relaying.
func dialBackend(ctx context.Context, inst *autoscale.Instance, role string, clientParams map[string]string, options string) (*backend, error) {
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host = inst.SocketDir()
	cfg.Port = inst.SocketPort()
	cfg.User = role
	cfg.Database = inst.DatabaseName()
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RuntimeParams = map[string]string{}
	for name, value := range clientParams {
		if !excludedStartupParams[name] {
			cfg.RuntimeParams[name] = value
		}
	}
	if options != "" {
		cfg.RuntimeParams["options"] = options
	}
	// pgconn must not run anything on the connection after it opens, as
	// the client owns the session from the first byte.
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
	return &backend{
		conn:       hijacked.Conn,
		r:          bufio.NewReaderSize(hijacked.Conn, 32*1024),
		w:          bufio.NewWriterSize(hijacked.Conn, 32*1024),
		pid:        hijacked.PID,
		secret:     hijacked.SecretKey,
		parameters: hijacked.ParameterStatuses,
	}, nil
}

// close ends the backend connection with a Terminate message, marking it
// detached first so its reader stays quiet.
func (b *backend) close() {
	b.detached.Store(true)
	_ = b.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if buf, err := (&pgproto3.Terminate{}).Encode(nil); err == nil {
		_, _ = b.conn.Write(buf)
	}
	_ = b.conn.Close()
}
