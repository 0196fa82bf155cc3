package autoscale

import (
	"context"
	"strings"

	"github.com/sdblocal/sdblocal/catalog"
)

// Superuser is the instance's superuser. Maintenance work such as backups
// connects as it over the instance's Unix socket, where pg_hba.conf trusts
// every local connection and only sdblocal's user can reach the socket.
const Superuser = superuser

// DatabaseBootstrapSQL returns the bootstrap SQL (roles.go) for a database
// created in an instance that has been bootstrapped already, for example
// one that receives a backup before it replaces the original database.
// Roles belong to the whole instance and exist already, so step 1's CREATE
// ROLE statements, the only ones that fail on a second run, are left out.
// Every other statement sets up the database dbName or repeats harmlessly.
// Run the statements as Superuser while connected to dbName. Running them
// again after loading data also grants the permission-set roles their
// rights on the loaded tables and sequences, through GRANT ... ON ALL.
func DatabaseBootstrapSQL(dbName string) []string {
	var statements []string
	for _, step := range bootstrapSteps {
		for _, stmt := range step.statements(dbName) {
			if strings.HasPrefix(stmt, "CREATE ROLE ") {
				continue
			}
			statements = append(statements, stmt)
		}
	}
	return statements
}

// ProvisionInstance creates the database's instance, registers it stopped,
// and returns it without changing the catalog, so that the caller can load
// data into it before it sets the status to ready. An instance that the
// manager already holds for the database, left by an attempt that a restart
// interrupted, is shut down and its files are replaced.
func (m *Manager) ProvisionInstance(ctx context.Context, db catalog.Database) (*Instance, error) {
	m.mu.Lock()
	old := m.instances[db.ID]
	m.mu.Unlock()
	if old != nil {
		// The old Instance is discarded with its files, so it stops as a
		// deleted database does.
		old.shutdown(true, suspendDatabaseDeleted)
	}
	l := newLayout(m.cfg.DataDir, db.ID)
	// A provisioning cut short by a killed sdblocal may have left initdb or
	// postgres running in the directory provision is about to empty.
	if _, err := stopProvisioningLeftovers(l, m.cfg.StopTimeout); err != nil {
		return nil, err
	}
	if err := provision(ctx, m.cfg.PGDir, l, db.Name, m.cfg.StartTimeout); err != nil {
		return nil, err
	}
	return m.add(db), nil
}
