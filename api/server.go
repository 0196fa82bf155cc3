// Package api serves Scaleway's serverless-sqldb/v1alpha1 HTTP API over the
// catalog, plus /healthz and the Prometheus /metrics endpoint.
package api

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/catalog"
)

// Instances is what the API needs from the instance manager
// (autoscale.Manager implements it).
type Instances interface {
	// Provision creates the database's instance in the background. It sets
	// the catalog status to ready when the instance is usable, or to error.
	Provision(db catalog.Database)
	// Remove stops the database's instance and deletes its files in the
	// background, then deletes the catalog record.
	Remove(id string)
	// State returns whether the instance runs and its allocated vCPUs.
	State(id string) (started bool, cpuCurrent uint32)
}

// Config holds the API server's settings.
type Config struct {
	// Regions the API accepts in its paths. Default: fr-par.
	Regions []string
	// PGHost and PGPort are the proxy's address, written into each
	// database's endpoint URL.
	PGHost string
	PGPort int
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
}
