package autoscale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// bootstrapVersionFile, in the data directory, records the last bootstrap
// step the instance ran. It sits beside the catalog it describes, so it
// moves with the data directory.
const bootstrapVersionFile = "sdblocal-bootstrap-version"

// superuser is the instance's superuser, created by initdb. It connects
// only over the instance's private Unix socket.
const superuser = "postgres"

// readBootstrapVersion returns the instance's bootstrap version. A missing
// file means version 1: instances provisioned before the file existed ran
// only the first step.
func readBootstrapVersion(l layout) (int, error) {
	path := filepath.Join(l.data, bootstrapVersionFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read bootstrap version: %w", err)
	}
	version, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || version < 1 {
		return 0, fmt.Errorf("invalid bootstrap version %q in %s: it must be a positive integer", strings.TrimSpace(string(raw)), path)
	}
	return version, nil
}

// writeBootstrapVersion replaces the version file through a rename, so a
// crash leaves either the old version or the new one.
func writeBootstrapVersion(l layout, version int) error {
	path := filepath.Join(l.data, bootstrapVersionFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(version)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write bootstrap version: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write bootstrap version: %w", err)
	}
	return nil
}

// applyBootstrapSteps runs, as the superuser on conn, every step newer than
// from, each in its own transaction, and calls done after each commit.
func applyBootstrapSteps(ctx context.Context, conn *pgx.Conn, dbName string, from int, done func(version int) error) error {
	for _, step := range bootstrapSteps {
		if step.version <= from {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, stmt := range step.statements(dbName) {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("bootstrap step %d (%s): SQL %q: %w", step.version, step.summary, stmt, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done != nil {
			if err := done(step.version); err != nil {
				return err
			}
		}
	}
	return nil
}

// updateInstanceConfig rewrites sdblocal.conf when it differs from the
// current instanceConf, so instances provisioned by an older sdblocal get
// today's settings at their next start. It reports whether it wrote.
func updateInstanceConfig(l layout) (bool, error) {
	want := []byte(instanceConfText())
	path := filepath.Join(l.data, sdblocalConfFile)
	have, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", sdblocalConfFile, err)
	}
	if bytes.Equal(have, want) {
		return false, nil
	}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		return false, fmt.Errorf("write %s: %w", sdblocalConfFile, err)
	}
	return true, nil
}

// startUpgraded starts the instance's postmaster after bringing its
// configuration up to date, then runs the bootstrap steps the instance
// lacks. It returns only once the instance is ready for clients: the
// caller lets clients in after it returns, so none sees an instance
// without its roles.
func (i *Instance) startUpgraded(ctx context.Context) (*postmaster, error) {
	version, err := readBootstrapVersion(i.layout)
	if err != nil {
		return nil, err
	}
	rewrote, err := updateInstanceConfig(i.layout)
	if err != nil {
		return nil, err
	}
	if rewrote {
		i.logger.Info("instance configuration rewritten", "file", sdblocalConfFile)
	}
	proc, err := startPostmaster(ctx, i.m.cfg.PGDir, i.layout, i.dbName, RoleAdmin)
	if err != nil || version >= latestBootstrapVersion() {
		return proc, err
	}

	started := time.Now()
	if err := upgradeBootstrap(ctx, i.layout, i.dbName, version); err != nil {
		if stopErr := proc.stop(i.m.cfg.StopTimeout); stopErr != nil {
			i.logger.Error("stop instance after a failed upgrade", "pid", proc.pid, "error", stopErr)
		}
		return nil, fmt.Errorf("upgrade from bootstrap version %d: %w", version, err)
	}
	i.logger.Info("instance bootstrap upgraded", "from_version", version, "to_version", latestBootstrapVersion(), "duration", time.Since(started))
	return proc, nil
}

// upgradeBootstrap connects as the superuser over the instance's Unix
// socket, where pg_hba.conf trusts every local connection, and runs the
// steps newer than from, recording each in the version file.
func upgradeBootstrap(ctx context.Context, l layout, dbName string, from int) error {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return err
	}
	cfg.Host = l.dir
	cfg.Port = socketPort
	cfg.User = superuser
	cfg.Database = dbName
	cfg.ConnectTimeout = 10 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect as %s: %w", superuser, err)
	}
	defer conn.Close(ctx)
	return applyBootstrapSteps(ctx, conn, dbName, from, func(version int) error {
		return writeBootstrapVersion(l, version)
	})
}
