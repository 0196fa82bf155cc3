package api

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
)

// Database name rules. The name becomes the PostgreSQL database name in the
// endpoint, so it is capped at PostgreSQL's identifier limit of 63 bytes
// (NAMEDATALEN - 1). The character set is the console's: letters, digits and
// dashes.
const maxNameLength = 63

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)

// vCPU limits of a database. Scaleway documents 15 vCPUs as the autoscaling
// cap, and a maximum of 0 would leave the database unable to ever run.
const (
	maxCPU    = 15
	minCPUMax = 1
	// The defaults when a create body omits the field are Terraform's
	// defaults for scaleway_sdb_sql_database.
	defaultCPUMin = 0
	defaultCPUMax = 15
)

// engineMajorVersion is the PostgreSQL major version the instances run, sent
// as engine_major_version and the only accepted value of version.
const engineMajorVersion = 14

// List pagination. The real API documents neither a default nor a maximum
// page size, so these are sdblocal's choices. A page_size of 0 means the
// default, as the SDK also treats 0 as unset when it applies its own default.
const (
	defaultPageSize = 20
	maxPageSize     = 100
)

// List orderings, the values of ListDatabasesRequestOrderBy in the SDK. The
// first of listOrders is the default.
const (
	orderCreatedAtAsc  = "created_at_asc"
	orderCreatedAtDesc = "created_at_desc"
	orderNameAsc       = "name_asc"
	orderNameDesc      = "name_desc"
)

var listOrders = []string{orderCreatedAtAsc, orderCreatedAtDesc, orderNameAsc, orderNameDesc}

// createDatabaseRequest is the body of POST /databases. The CPU fields are
// pointers so an absent field takes its default while 0 stays a real value.
type createDatabaseRequest struct {
	ProjectID      string  `json:"project_id"`
	OrganizationID string  `json:"organization_id"`
	Name           string  `json:"name"`
	CPUMin         *uint32 `json:"cpu_min"`
	CPUMax         *uint32 `json:"cpu_max"`
	FromBackupID   string  `json:"from_backup_id"`
	Version        string  `json:"version"`
	// ColdStartDelay is an sdblocal extension that the real API does not
	// have; empty means the server's --cold-start-delay.
	ColdStartDelay string `json:"cold_start_delay"`
}

// updateDatabaseRequest is the body of PATCH /databases/{database_id}. Only
// the fields present change.
type updateDatabaseRequest struct {
	CPUMin *uint32 `json:"cpu_min"`
	CPUMax *uint32 `json:"cpu_max"`
	// ColdStartDelay, an sdblocal extension, sets the database's delay;
	// the empty string returns it to the server's --cold-start-delay.
	ColdStartDelay *string `json:"cold_start_delay"`
}

// validateCreate checks every field of req, fills the CPU defaults and
// lower-cases the UUIDs. It returns one entry per invalid field.
func validateCreate(req *createDatabaseRequest) []argumentError {
	var details []argumentError

	switch {
	case req.ProjectID == "":
		details = append(details, argumentError{"project_id", reasonRequired, "set project_id to the UUID of the project that will own the database"})
	case !auth.ValidUUID(req.ProjectID):
		details = append(details, argumentError{"project_id", reasonFormat, fmt.Sprintf("project_id %q is not a UUID", req.ProjectID)})
	default:
		req.ProjectID = strings.ToLower(req.ProjectID)
	}

	if req.OrganizationID != "" {
		if auth.ValidUUID(req.OrganizationID) {
			req.OrganizationID = strings.ToLower(req.OrganizationID)
		} else {
			details = append(details, argumentError{"organization_id", reasonFormat, fmt.Sprintf("organization_id %q is not a UUID", req.OrganizationID)})
		}
	}

	if detail, ok := validateName(req.Name); !ok {
		details = append(details, detail)
	}

	if req.CPUMin == nil {
		req.CPUMin = ptr(uint32(defaultCPUMin))
	}
	if req.CPUMax == nil {
		req.CPUMax = ptr(uint32(defaultCPUMax))
	}
	details = append(details, validateCPURange(*req.CPUMin, *req.CPUMax)...)

	if req.FromBackupID != "" {
		if auth.ValidUUID(req.FromBackupID) {
			req.FromBackupID = strings.ToLower(req.FromBackupID)
		} else {
			details = append(details, argumentError{"from_backup_id", reasonFormat, fmt.Sprintf("from_backup_id %q is not a UUID", req.FromBackupID)})
		}
	}

	if req.Version != "" && req.Version != strconv.Itoa(engineMajorVersion) {
		details = append(details, argumentError{"version", reasonConstraint,
			fmt.Sprintf("version %q is not available: sdblocal runs PostgreSQL %d, so leave version empty or set it to %q", req.Version, engineMajorVersion, strconv.Itoa(engineMajorVersion))})
	}

	delay, detail, ok := validateColdStartDelay(req.ColdStartDelay)
	if ok {
		req.ColdStartDelay = delay
	} else {
		details = append(details, detail)
	}
	return details
}

// validateColdStartDelay checks a cold_start_delay value and returns it in
// the form the catalog stores ("2s", "1s-4s"), or "" for the empty string.
func validateColdStartDelay(value string) (string, argumentError, bool) {
	if value == "" {
		return "", argumentError{}, true
	}
	delay, err := autoscale.ParseColdStartDelay(value)
	if err != nil {
		return "", argumentError{"cold_start_delay", reasonFormat, err.Error() + ": set a Go duration such as 2s, a range such as 1s-4s, or an empty string for the server's default"}, false
	}
	return delay.String(), argumentError{}, true
}

func validateName(name string) (argumentError, bool) {
	switch {
	case name == "":
		return argumentError{"name", reasonRequired, "set name to 1 to 63 letters, digits or dashes"}, false
	case len(name) > maxNameLength:
		return argumentError{"name", reasonConstraint, fmt.Sprintf("name must be at most %d characters, got %d", maxNameLength, len(name))}, false
	case !namePattern.MatchString(name):
		return argumentError{"name", reasonFormat, fmt.Sprintf("name %q must contain only letters, digits and dashes, and start with a letter or digit", name)}, false
	case name == "template0" || name == "template1":
		// Every PostgreSQL cluster has these two template databases, so
		// an instance could never create a database of that name.
		return argumentError{"name", reasonConstraint, fmt.Sprintf("name %q is reserved by PostgreSQL: choose another name", name)}, false
	}
	return argumentError{}, true
}

// validateCPURange checks a database's vCPU limits as they will be stored.
func validateCPURange(cpuMin, cpuMax uint32) []argumentError {
	var details []argumentError
	if cpuMin > maxCPU {
		details = append(details, argumentError{"cpu_min", reasonConstraint, fmt.Sprintf("cpu_min must be between 0 and %d, got %d", maxCPU, cpuMin)})
	}
	if cpuMax < minCPUMax || cpuMax > maxCPU {
		details = append(details, argumentError{"cpu_max", reasonConstraint, fmt.Sprintf("cpu_max must be between %d and %d, got %d", minCPUMax, maxCPU, cpuMax)})
	}
	if len(details) == 0 && cpuMin > cpuMax {
		details = append(details, argumentError{"cpu_min", reasonConstraint, fmt.Sprintf("cpu_min (%d) must not be greater than cpu_max (%d)", cpuMin, cpuMax)})
	}
	return details
}

// validateDatabaseID checks the database_id path parameter and returns it in
// lower case, the form the catalog stores.
func validateDatabaseID(id string) (string, error) {
	if !auth.ValidUUID(id) {
		return "", invalidArgument("database_id", reasonFormat, fmt.Sprintf("database_id %q is not a UUID", id))
	}
	return strings.ToLower(id), nil
}

// listQuery is the parsed query of GET /databases. Empty strings mean "no
// filter".
type listQuery struct {
	page           int
	pageSize       int
	orderBy        string
	name           string
	projectID      string
	organizationID string
}

// parseListQuery parses and checks the list parameters, returning one entry
// per invalid parameter.
func parseListQuery(values url.Values) (listQuery, []argumentError) {
	p := newQueryParser(values)
	paging := p.paging(listOrders)
	q := listQuery{
		page:           paging.page,
		pageSize:       paging.pageSize,
		orderBy:        paging.orderBy,
		name:           values.Get("name"),
		projectID:      p.uuid("project_id"),
		organizationID: p.uuid("organization_id"),
	}
	return q, p.details
}

func ptr[T any](v T) *T { return &v }
