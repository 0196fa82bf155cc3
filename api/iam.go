package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sdblocal/sdblocal/auth"
)

// iamPrefix is the path prefix of the IAM calls. IAM is global: its paths
// carry no region.
const iamPrefix = "/iam/v1alpha1"

// Resources named in not_found errors of the IAM and Account calls, the
// names api.scaleway.com sends.
const (
	resourceApplication = "application"
	resourceUser        = "user"
	resourceAPIKey      = "api_key"
	resourcePolicy      = "policy"
	resourceProject     = "project"
)

// Resources named in permissions_denied details of the IAM and Account
// calls.
//
// NOTE: only account_project is confirmed, by an error message of the real
// API quoted in a Terraform provider discussion. The IAM names are guesses
// in the same style.
const (
	permissionApplication = "iam_application"
	permissionUser        = "iam_user"
	permissionAPIKey      = "iam_api_key"
	permissionPolicy      = "iam_policy"
	permissionProject     = "account_project"
)

// Field limits of IAM records, as the SDK documents them for create and
// update requests.
const (
	maxIAMNameLength     = 64
	maxDescriptionLength = 200
	maxTags              = 10
)

func (s *server) iamRoutes(mux *http.ServeMux) {
	s.handleResource(mux, iamPrefix+"/applications", map[string]apiHandler{
		http.MethodGet:  s.listApplications,
		http.MethodPost: s.createApplication,
	})
	s.handleResource(mux, iamPrefix+"/applications/{application_id}", map[string]apiHandler{
		http.MethodGet:    s.getApplication,
		http.MethodPatch:  s.updateApplication,
		http.MethodDelete: s.deleteApplication,
	})
	s.handleResource(mux, iamPrefix+"/users", map[string]apiHandler{
		http.MethodGet: s.listUsers,
	})
	s.handleResource(mux, iamPrefix+"/users/{user_id}", map[string]apiHandler{
		http.MethodGet: s.getUser,
	})
	s.handleResource(mux, iamPrefix+"/api-keys", map[string]apiHandler{
		http.MethodGet:  s.listAPIKeys,
		http.MethodPost: s.createAPIKey,
	})
	s.handleResource(mux, iamPrefix+"/api-keys/{access_key}", map[string]apiHandler{
		http.MethodGet:    s.getAPIKey,
		http.MethodPatch:  s.updateAPIKey,
		http.MethodDelete: s.deleteAPIKey,
	})
	s.handleResource(mux, iamPrefix+"/policies", map[string]apiHandler{
		http.MethodGet:  s.listPolicies,
		http.MethodPost: s.createPolicy,
	})
	s.handleResource(mux, iamPrefix+"/policies/{policy_id}", map[string]apiHandler{
		http.MethodGet:    s.getPolicy,
		http.MethodPatch:  s.updatePolicy,
		http.MethodDelete: s.deletePolicy,
	})
	s.handleResource(mux, iamPrefix+"/rules", map[string]apiHandler{
		http.MethodGet: s.listRules,
		http.MethodPut: s.setRules,
	})
	s.handleResource(mux, iamPrefix+"/permission-sets", map[string]apiHandler{
		http.MethodGet: s.listPermissionSets,
	})
}

// authorizeOrganization checks that the caller may perform action in the
// organization, and returns permissions_denied naming deniedAction on
// resource otherwise.
func (s *server) authorizeOrganization(call *apiCall, organizationID string, action auth.OrganizationAction, resource, deniedAction string) error {
	ok, err := s.authn.AuthorizeOrganization(call.principal(), organizationID, action)
	if err != nil {
		return fmt.Errorf("authorize principal %s on organization %s: %w", call.principal().ID, organizationID, err)
	}
	if !ok {
		return permissionsDeniedOn(resource, deniedAction)
	}
	return nil
}

// callerOrganization checks an organization ID sent by the client, in the
// field named field, and returns it in lower case. An empty one means the
// caller's organization, because the SDK sends its default organization,
// which may be unset. Another organization is permissions_denied, since a
// principal belongs to exactly one.
func callerOrganization(call *apiCall, field, requested, resource, deniedAction string) (string, error) {
	if requested == "" {
		return call.principal().OrganizationID, nil
	}
	if !auth.ValidUUID(requested) {
		return "", invalidArgument(field, reasonFormat, fmt.Sprintf("%s %q is not a UUID", field, requested))
	}
	requested = strings.ToLower(requested)
	if requested != call.principal().OrganizationID {
		return "", permissionsDeniedOn(resource, deniedAction)
	}
	return requested, nil
}

// validateIAMName checks the name of an application, policy or project.
func validateIAMName(field, name string) (argumentError, bool) {
	switch {
	case strings.TrimSpace(name) == "":
		return argumentError{field, reasonRequired, fmt.Sprintf("set %s to 1 to %d characters", field, maxIAMNameLength)}, false
	case utf8.RuneCountInString(name) > maxIAMNameLength:
		return argumentError{field, reasonConstraint, fmt.Sprintf("%s must be at most %d characters, got %d", field, maxIAMNameLength, utf8.RuneCountInString(name))}, false
	}
	return argumentError{}, true
}

func validateDescription(field, description string) (argumentError, bool) {
	if n := utf8.RuneCountInString(description); n > maxDescriptionLength {
		return argumentError{field, reasonConstraint, fmt.Sprintf("%s must be at most %d characters, got %d", field, maxDescriptionLength, n)}, false
	}
	return argumentError{}, true
}

func validateTags(tags []string) (argumentError, bool) {
	if len(tags) > maxTags {
		return argumentError{"tags", reasonConstraint, fmt.Sprintf("at most %d tags are allowed, got %d", maxTags, len(tags))}, false
	}
	for _, tag := range tags {
		if tag == "" {
			return argumentError{"tags", reasonConstraint, "tags must not be empty strings"}, false
		}
	}
	return argumentError{}, true
}

// argumentErrors collects argument errors from validators that return an
// error and whether the value is valid.
type argumentErrors []argumentError

func (d *argumentErrors) check(detail argumentError, ok bool) {
	if !ok {
		*d = append(*d, detail)
	}
}

func (d argumentErrors) err() error {
	if len(d) == 0 {
		return nil
	}
	return invalidArguments(d...)
}

// recordTime returns the time stored in new and updated IAM records,
// truncated to the microseconds the API serves so the stored time equals
// the one sent.
func recordTime() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// orEmpty returns s, or an empty slice when s is nil, so a list field is
// sent as [] rather than null.
func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// updatedAt returns the update time of a record, which is its creation time
// until the first update.
func updatedAt(created, updated time.Time) time.Time {
	if updated.IsZero() {
		return created
	}
	return updated
}

// containsTag reports whether any tag contains the substring, the match the
// SDK documents for the tag filters. An empty substring matches everything.
func containsTag(tags []string, substring string) bool {
	if substring == "" {
		return true
	}
	for _, tag := range tags {
		if strings.Contains(tag, substring) {
			return true
		}
	}
	return false
}
