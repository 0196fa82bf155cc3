package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
)

// Usage metering is a local extension: the real API has no such call, and
// bills the same quantities, provisioned vCPUs over time and storage over
// time, through the Scaleway console instead.
//
//	GET /serverless-sqldb/v1alpha1/regions/{region}/databases/{database_id}/usage
//
// It needs the same permission as reading the database.

// usageJSON is the response of the usage call. The counters start at zero
// when sdblocal starts, at the time in since.
type usageJSON struct {
	DatabaseID string `json:"database_id"`
	// ProvisionedVCPUSeconds is cpu_current integrated over time: a
	// suspended database adds nothing.
	ProvisionedVCPUSeconds float64 `json:"provisioned_vcpu_seconds"`
	// CPUSeconds is the CPU time the database's processes used.
	CPUSeconds float64 `json:"cpu_seconds"`
	// StorageByteSeconds is the data directory's size integrated over time,
	// suspended or not.
	StorageByteSeconds float64 `json:"storage_byte_seconds"`
	// StorageBytes is the data directory's size at the last measurement.
	StorageBytes int64  `json:"storage_bytes"`
	Since        string `json:"since"`
}

func (s *server) usageRoutes(mux *http.ServeMux) {
	s.handleResource(mux, apiPrefix+"/databases/{database_id}/usage", map[string]apiHandler{
		http.MethodGet: s.getDatabaseUsage,
	})
}

// getDatabaseUsage handles GET /databases/{database_id}/usage. A database
// without an instance (being created, failed or being deleted) has used
// nothing, so it gets zeros counted from now.
func (s *server) getDatabaseUsage(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	id, err := validateDatabaseID(r.PathValue("database_id"))
	if err != nil {
		return nil, err
	}
	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionRead, actionRead); err != nil {
		return nil, err
	}
	usage, err := s.inst.Usage(db.ID)
	if errors.Is(err, autoscale.ErrNoInstance) {
		usage, err = autoscale.Usage{Since: time.Now()}, nil
	}
	if err != nil {
		return nil, err
	}
	return usageJSON{
		DatabaseID:             db.ID,
		ProvisionedVCPUSeconds: usage.ProvisionedVCPUSeconds,
		CPUSeconds:             usage.CPUSeconds,
		StorageByteSeconds:     usage.StorageByteSeconds,
		StorageBytes:           usage.StorageBytes,
		Since:                  usage.Since.UTC().Format(createdAtLayout),
	}, nil
}
