package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	iam "github.com/scaleway/scaleway-sdk-go/api/iam/v1alpha1"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
	"github.com/spf13/cobra"
)

var databaseColumns = []string{"ID", "NAME", "STATUS", "STARTED", "CPU_MIN", "CPU_MAX", "CPU_CURRENT", "PROJECT_ID", "CREATED_AT"}

func databaseRow(d *sdb.Database) []string {
	created := "-"
	if d.CreatedAt != nil {
		created = d.CreatedAt.UTC().Format(time.RFC3339)
	}
	return []string{d.ID, d.Name, string(d.Status), strconv.FormatBool(d.Started),
		strconv.Itoa(int(d.CPUMin)), strconv.Itoa(int(d.CPUMax)), strconv.Itoa(int(d.CPUCurrent)), d.ProjectID, created}
}

func printDatabase(p printer, d *sdb.Database) error {
	return print(p, d, []*sdb.Database{d}, databaseColumns, databaseRow)
}

func newDBCommand() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Manage serverless SQL databases through the API",
	}
	addClientFlags(cmd, &opts)

	var create struct {
		projectID      string
		cpuMin, cpuMax uint32
		fromBackup     string
		wait           bool
	}
	createCmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a database",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			api := sdb.NewAPI(c.client)
			req := &sdb.CreateDatabaseRequest{Name: args[0], ProjectID: create.projectID, CPUMin: create.cpuMin, CPUMax: create.cpuMax}
			if req.ProjectID == "" {
				req.ProjectID = c.projectID
			}
			if create.fromBackup != "" {
				req.FromBackupID = &create.fromBackup
			}
			db, err := api.CreateDatabase(req)
			if err != nil {
				return err
			}
			if create.wait {
				if db, err = waitDatabase(api, db.ID); err != nil {
					return err
				}
			}
			return printDatabase(opts.printer(cmd), db)
		},
	}
	createCmd.Flags().StringVar(&create.projectID, "project-id", "", "project of the database (default $SCW_DEFAULT_PROJECT_ID or the owner's project)")
	createCmd.Flags().Uint32Var(&create.cpuMin, "cpu-min", 0, "minimum vCPUs; 1 or more keeps the instance running")
	createCmd.Flags().Uint32Var(&create.cpuMax, "cpu-max", 4, "maximum vCPUs, 1 to 15")
	createCmd.Flags().StringVar(&create.fromBackup, "from-backup-id", "", "create the database from this backup")
	createCmd.Flags().BoolVar(&create.wait, "wait", true, "wait until the database is ready")

	var list struct {
		name, projectID, orderBy string
	}
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List databases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			req := &sdb.ListDatabasesRequest{OrderBy: sdb.ListDatabasesRequestOrderBy(list.orderBy)}
			if list.name != "" {
				req.Name = &list.name
			}
			if list.projectID != "" {
				req.ProjectID = list.projectID
			}
			resp, err := sdb.NewAPI(c.client).ListDatabases(req, scw.WithAllPages())
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), resp, resp.Databases, databaseColumns, databaseRow)
		},
	}
	listCmd.Flags().StringVar(&list.name, "name", "", "only databases whose name contains this text")
	listCmd.Flags().StringVar(&list.projectID, "project-id", "", "only databases of this project")
	listCmd.Flags().StringVar(&list.orderBy, "order-by", "created_at_asc", "created_at_asc, created_at_desc, name_asc or name_desc")

	getCmd := &cobra.Command{
		Use:   "get DATABASE_ID",
		Short: "Show a database",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			db, err := sdb.NewAPI(c.client).GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: args[0]})
			if err != nil {
				return explainDatabaseError(args[0], err)
			}
			return printDatabase(opts.printer(cmd), db)
		},
	}

	var update struct{ cpuMin, cpuMax uint32 }
	updateCmd := &cobra.Command{
		Use:   "update DATABASE_ID",
		Short: "Change a database's cpu_min or cpu_max",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &sdb.UpdateDatabaseRequest{DatabaseID: args[0]}
			if cmd.Flags().Changed("cpu-min") {
				req.CPUMin = &update.cpuMin
			}
			if cmd.Flags().Changed("cpu-max") {
				req.CPUMax = &update.cpuMax
			}
			if req.CPUMin == nil && req.CPUMax == nil {
				return errors.New("nothing to update: pass --cpu-min or --cpu-max")
			}
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			db, err := sdb.NewAPI(c.client).UpdateDatabase(req)
			if err != nil {
				return err
			}
			return printDatabase(opts.printer(cmd), db)
		},
	}
	updateCmd.Flags().Uint32Var(&update.cpuMin, "cpu-min", 0, "new minimum vCPUs")
	updateCmd.Flags().Uint32Var(&update.cpuMax, "cpu-max", 0, "new maximum vCPUs")

	deleteCmd := &cobra.Command{
		Use:   "delete DATABASE_ID",
		Short: "Delete a database and all its data",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			db, err := sdb.NewAPI(c.client).DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: args[0]})
			if err != nil {
				return explainDatabaseError(args[0], err)
			}
			return printDatabase(opts.printer(cmd), db)
		},
	}

	var backupID string
	restoreCmd := &cobra.Command{
		Use:   "restore DATABASE_ID --backup-id BACKUP_ID",
		Short: "Replace a database's contents with a backup",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if backupID == "" {
				return errors.New("missing --backup-id")
			}
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			db, err := sdb.NewAPI(c.client).RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: args[0], BackupID: backupID})
			if err != nil {
				return err
			}
			return printDatabase(opts.printer(cmd), db)
		},
	}
	restoreCmd.Flags().StringVar(&backupID, "backup-id", "", "backup to restore")

	var psqlPath string
	connectCmd := &cobra.Command{
		Use:   "connect DATABASE_ID [-- PSQL_ARGS...]",
		Short: "Run psql on a database with the current credentials",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			db, err := sdb.NewAPI(c.client).GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: args[0]})
			if err != nil {
				return err
			}
			principalID, err := c.principal()
			if err != nil {
				return err
			}
			psql := exec.Command(psqlPath, append([]string{db.Endpoint}, args[1:]...)...)
			// The secret goes through the environment, not the command
			// line, which other users can read in the process list.
			psql.Env = append(os.Environ(), "PGUSER="+principalID, "PGPASSWORD="+c.secretKey)
			psql.Stdin, psql.Stdout, psql.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			err = psql.Run()
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				os.Exit(exitErr.ExitCode())
			}
			if err != nil {
				return fmt.Errorf("run %s: %w", psqlPath, err)
			}
			return nil
		},
	}
	connectCmd.Flags().StringVar(&psqlPath, "psql", "psql", "psql binary to run")

	cmd.AddCommand(createCmd, listCmd, getCmd, updateCmd, deleteCmd, restoreCmd, connectCmd)
	return cmd
}

// principal returns the principal ID the client's key belongs to, asking
// the IAM API when the credentials came from the environment.
func (c *apiClient) principal() (string, error) {
	if c.principalID != "" {
		return c.principalID, nil
	}
	key, err := iam.NewAPI(c.client).GetAPIKey(&iam.GetAPIKeyRequest{AccessKey: c.accessKey})
	if err != nil {
		return "", fmt.Errorf("look up the principal of access key %s: %w", c.accessKey, err)
	}
	switch {
	case key.ApplicationID != nil:
		return *key.ApplicationID, nil
	case key.UserID != nil:
		return *key.UserID, nil
	}
	return "", fmt.Errorf("access key %s belongs to no user or application", c.accessKey)
}

// explainDatabaseError adds the likely cause to the SDK's error for a
// database the API rejects. Like the real service, the API returns
// permissions_denied both for a deleted database and for one the key may
// not read.
func explainDatabaseError(id string, err error) error {
	var denied *scw.PermissionsDeniedError
	if errors.As(err, &denied) {
		return fmt.Errorf("database %s was deleted, or this key may not read it: %w", id, err)
	}
	return err
}

// waitDatabase polls until the database leaves its transient statuses.
func waitDatabase(api *sdb.API, id string) (*sdb.Database, error) {
	timeout := 2 * time.Minute
	interval := 200 * time.Millisecond
	return api.WaitForDatabase(&sdb.WaitForDatabaseRequest{DatabaseID: id, Timeout: &timeout, RetryInterval: &interval})
}
