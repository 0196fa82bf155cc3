package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
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
		Short: "List, export and download database backups through the API",
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

	cmd.AddCommand(listCmd, getCmd, exportCmd, downloadCmd)
	return cmd
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
