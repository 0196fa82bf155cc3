// Command sdblocal runs a local stand-in for Scaleway's Serverless SQL
// Databases: the serverless-sqldb API, a PostgreSQL-wire proxy, and one
// PostgreSQL 14 instance per database that suspends when idle.
package main

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix prefixes the environment variable of every flag:
// --idle-timeout is also SDBLOCAL_IDLE_TIMEOUT.
const envPrefix = "SDBLOCAL_"

func main() {
	root := &cobra.Command{
		Use:           "sdblocal",
		Short:         "Local Scaleway Serverless SQL Databases: API, PostgreSQL proxy and scale-to-zero instances",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newEnvCommand(), newPostgresCommand(), newDBCommand(), newBackupCommand(), newIAMCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sdblocal:", err)
		os.Exit(1)
	}
}

// bindEnv lets every flag of cmd be set by its environment variable when
// the flag is not on the command line, and names the variable in --help.
func bindEnv(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		name := envName(f.Name)
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, name)
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		var err error
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if err != nil || f.Changed {
				return
			}
			if value, ok := os.LookupEnv(envName(f.Name)); ok {
				if setErr := cmd.Flags().Set(f.Name, value); setErr != nil {
					err = fmt.Errorf("invalid %s=%q: %w", envName(f.Name), value, setErr)
				}
			}
		})
		if err == nil && prev != nil {
			err = prev(cmd, args)
		}
		return err
	}
}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// defaultDataDir is /var/lib/sdblocal for root and
// $XDG_DATA_HOME/sdblocal (~/.local/share/sdblocal) for other users.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/sdblocal"
	}
	if dir := os.Getenv("XDG_DATA_HOME"); dir != "" {
		return filepath.Join(dir, "sdblocal")
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		return filepath.Join(u.HomeDir, ".local", "share", "sdblocal")
	}
	return filepath.Join(os.TempDir(), "sdblocal")
}

// Default listener addresses. 5433 leaves 5432 to a PostgreSQL the machine
// may already run.
const (
	defaultAPIAddr = "127.0.0.1:8624"
	defaultPGAddr  = "127.0.0.1:5433"
)
