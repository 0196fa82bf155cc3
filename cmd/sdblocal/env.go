package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sdblocal/sdblocal/auth"
)

func newEnvCommand() *cobra.Command {
	var dataDir, apiAddr, pgAddr string
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print export lines for the Scaleway SDK/CLI and psql: eval \"$(sdblocal env)\"",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			creds, err := auth.ReadCredentials(dataDir)
			if err != nil {
				return err
			}
			// A running server's recorded addresses win over the defaults,
			// but not over flags given on the command line.
			if addrs, ok := readAddresses(dataDir); ok {
				if !cmd.Flags().Changed("api-addr") {
					apiAddr = addrs.API
				}
				if !cmd.Flags().Changed("pg-addr") {
					pgAddr = addrs.PG
				}
			}
			pgHost, pgPort, err := net.SplitHostPort(pgAddr)
			if err != nil {
				return fmt.Errorf("invalid --pg-addr %q: expected host:port", pgAddr)
			}
			lines := [][2]string{
				{"SCW_ACCESS_KEY", creds.AccessKey},
				{"SCW_SECRET_KEY", creds.SecretKey},
				{"SCW_DEFAULT_ORGANIZATION_ID", creds.OrganizationID},
				{"SCW_DEFAULT_PROJECT_ID", creds.ProjectID},
				{"SCW_DEFAULT_REGION", "fr-par"},
				{"SCW_API_URL", "http://" + apiAddr},
				{"PGUSER", creds.PrincipalID},
				{"PGPASSWORD", creds.SecretKey},
				{"PGHOST", pgHost},
				{"PGPORT", pgPort},
				{"PGSSLMODE", "require"},
			}
			for _, line := range lines {
				fmt.Printf("export %s=%s\n", line[0], shellQuote(line[1]))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data directory of the server")
	cmd.Flags().StringVar(&apiAddr, "api-addr", defaultAPIAddr, "host:port of the HTTP API, when the server is not running")
	cmd.Flags().StringVar(&pgAddr, "pg-addr", defaultPGAddr, "host:port of the PostgreSQL proxy, when the server is not running")
	bindEnv(cmd)
	return cmd
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
