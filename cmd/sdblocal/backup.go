package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
	"github.com/spf13/cobra"
)

var backupColumns = []string{"ID", "DATABASE_ID", "STATUS", "SIZE", "CREATED_AT", "EXPIRES_AT"}

func backupRow(b *sdb.DatabaseBackup) []string {
	size := "-"
	if b.Size != nil {
		size = strconv.FormatUint(uint64(*b.Size), 10)
	}
	return []string{b.ID, b.DatabaseID, string(b.Status), size, formatTime(b.CreatedAt), formatTime(b.ExpiresAt)}
}

func formatTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func newBackupCommand() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take, list, export and download database backups through the API",
	}
	addClientFlags(cmd, &opts)

	var list struct{ databaseID, orderBy string }
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List backups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			req := &sdb.ListDatabaseBackupsRequest{DatabaseID: list.databaseID, OrderBy: sdb.ListDatabaseBackupsRequestOrderBy(list.orderBy)}
			resp, err := sdb.NewAPI(c.client).ListDatabaseBackups(req, scw.WithAllPages())
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), resp, resp.Backups, backupColumns, backupRow)
		},
	}
	listCmd.Flags().StringVar(&list.databaseID, "database-id", "", "only backups of this database")
	listCmd.Flags().StringVar(&list.orderBy, "order-by", "created_at_desc", "created_at_desc or created_at_asc")

	getCmd := &cobra.Command{
		Use:   "get BACKUP_ID",
		Short: "Show a backup",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			b, err := sdb.NewAPI(c.client).GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: args[0]})
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), b, []*sdb.DatabaseBackup{b}, backupColumns, backupRow)
		},
	}

	exportCmd := &cobra.Command{
		Use:   "export BACKUP_ID",
		Short: "Prepare a download URL for a backup and print it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			b, err := exportBackup(sdb.NewAPI(c.client), args[0])
			if err != nil {
				return err
			}
			if opts.output == "json" {
				return print(opts.printer(cmd), b, []*sdb.DatabaseBackup{b}, backupColumns, backupRow)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nexpires at %s\n", *b.DownloadURL, formatTime(b.DownloadURLExpiresAt))
			return nil
		},
	}

	var file string
	downloadCmd := &cobra.Command{
		Use:   "download BACKUP_ID",
		Short: "Export a backup and save it as a pg_dump custom-format file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			b, err := exportBackup(sdb.NewAPI(c.client), args[0])
			if err != nil {
				return err
			}
			if file == "" {
				file = args[0] + ".pg_dump"
			}
			n, err := download(*b.DownloadURL, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d bytes to %s; restore with: pg_restore --no-owner --no-privileges -d <connection> %s\n", n, file, file)
			return nil
		},
	}
	downloadCmd.Flags().StringVarP(&file, "file", "f", "", "output file (default BACKUP_ID.pg_dump)")

	var wait bool
	createCmd := &cobra.Command{
		Use:   "create DATABASE_ID",
		Short: "Take a backup of a database now (an sdblocal extension of the API)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			b, err := createBackup(c.client, args[0])
			if err != nil {
				return err
			}
			if wait {
				if b, err = waitBackup(sdb.NewAPI(c.client), b.ID); err != nil {
					return err
				}
				if b.Status != sdb.DatabaseBackupStatusReady {
					return fmt.Errorf("backup %s of database %s ended with status %s: see the sdblocal log for the cause", b.ID, b.DatabaseID, b.Status)
				}
			}
			return print(opts.printer(cmd), b, []*sdb.DatabaseBackup{b}, backupColumns, backupRow)
		},
	}
	createCmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait until the backup is ready or has failed")

	cmd.AddCommand(createCmd, listCmd, getCmd, exportCmd, downloadCmd)
	return cmd
}

// createBackup calls POST /backups, which the Scaleway SDK does not know
// because the real API takes backups only on its own schedule.
func createBackup(client *scw.Client, databaseID string) (*sdb.DatabaseBackup, error) {
	region, ok := client.GetDefaultRegion()
	if !ok {
		return nil, errors.New("no region: set --region or SCW_DEFAULT_REGION")
	}
	req := &scw.ScalewayRequest{
		Method: http.MethodPost,
		Path:   "/serverless-sqldb/v1alpha1/regions/" + url.PathEscape(string(region)) + "/backups",
	}
	if err := req.SetBody(map[string]string{"database_id": databaseID}); err != nil {
		return nil, err
	}
	var b sdb.DatabaseBackup
	if err := client.Do(req, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// waitBackup polls until the backup leaves unknown_status.
func waitBackup(api *sdb.API, id string) (*sdb.DatabaseBackup, error) {
	timeout := 15 * time.Minute
	interval := 200 * time.Millisecond
	return api.WaitForDatabaseBackup(&sdb.WaitForDatabaseBackupRequest{BackupID: id, Timeout: &timeout, RetryInterval: &interval})
}

// exportBackup asks for a download URL and waits until the backup carries
// one.
func exportBackup(api *sdb.API, id string) (*sdb.DatabaseBackup, error) {
	b, err := api.ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: id})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for b.DownloadURL == nil || *b.DownloadURL == "" {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("backup %s has no download URL after 2 minutes", id)
		}
		time.Sleep(200 * time.Millisecond)
		if b, err = api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: id}); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// download saves url to file, writing to a temporary name first so a
// failed transfer leaves no partial file behind.
func download(url, file string) (int64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, fmt.Errorf("download backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("download backup: HTTP %s", resp.Status)
	}
	tmp := file + ".part"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, resp.Body)
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("download backup: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return 0, errors.Join(err, os.Remove(tmp))
	}
	return n, nil
}
