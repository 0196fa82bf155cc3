package api

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
)

// apiError is an error with the HTTP status and the JSON body the client
// receives. The bodies follow the Scaleway error model, whose "type" field
// the Go SDK turns into typed errors (*scw.InvalidArgumentsError and the
// like), and Terraform checks the type or the status code.
type apiError struct {
	status int
	// errorType is the body's "type" field, kept apart for logs.
	errorType string
	body      any
	// cause is logged and never sent to the client.
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("http %d: %v", e.status, e.cause)
	}
	return fmt.Sprintf("http %d: %+v", e.status, e.body)
}

func (e *apiError) Unwrap() error { return e.cause }

// Argument error reasons, the values defined by the SDK's InvalidArgumentsError.
const (
	reasonRequired   = "required"
	reasonFormat     = "format"
	reasonConstraint = "constraint"
	reasonUnknown    = "unknown"
)

// argumentError is one entry of an invalid_arguments body.
type argumentError struct {
	ArgumentName string `json:"argument_name"`
	Reason       string `json:"reason"`
	HelpMessage  string `json:"help_message"`
}

type invalidArgumentsBody struct {
	Details []argumentError `json:"details"`
	Message string          `json:"message"`
	Type    string          `json:"type"`
}

func invalidArguments(details ...argumentError) *apiError {
	return &apiError{status: http.StatusBadRequest, errorType: "invalid_arguments", body: invalidArgumentsBody{
		Details: details,
		Message: "invalid argument(s)",
		Type:    "invalid_arguments",
	}}
}

func invalidArgument(name, reason, help string) *apiError {
	return invalidArguments(argumentError{ArgumentName: name, Reason: reason, HelpMessage: help})
}

type notFoundBody struct {
	Message    string `json:"message"`
	Resource   string `json:"resource"`
	ResourceID string `json:"resource_id"`
	Type       string `json:"type"`
}

func notFound(resource, id string) *apiError {
	return &apiError{status: http.StatusNotFound, errorType: "not_found", body: notFoundBody{
		Message:    "resource is not found",
		Resource:   resource,
		ResourceID: id,
		Type:       "not_found",
	}}
}

// permissionDetail names what the caller lacked. Details is [] rather than
// null when empty, because the real API sends [] for a deleted resource.
type permissionDetail struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
}

type permissionsDeniedBody struct {
	Details []permissionDetail `json:"details"`
	Message string             `json:"message"`
	Type    string             `json:"type"`
}

// resourceDatabasePermission is the resource named in permissions_denied
// details for every database action.
const resourceDatabasePermission = "serverless_sql_database"

// Actions named in permissions_denied details.
//
// NOTE: the real API's action names for this product are not documented.
// Other Scaleway APIs send "read" for reads, and the other verbs are guesses.
const (
	actionList   = "list"
	actionRead   = "read"
	actionCreate = "create"
	actionWrite  = "write"
	actionDelete = "delete"
	// actionRestore and actionExport name the backup actions, which
	// need the same right as changing a database.
	actionRestore = "restore"
	actionExport  = "export"
)

func permissionsDenied(action string) *apiError {
	return permissionsDeniedOn(resourceDatabasePermission, action)
}

// permissionsDeniedOn returns permissions_denied naming the action on the
// resource, for calls on other resources than databases.
func permissionsDeniedOn(resource, action string) *apiError {
	return &apiError{status: http.StatusForbidden, errorType: "permissions_denied", body: permissionsDeniedBody{
		Details: []permissionDetail{{Resource: resource, Action: action}},
		Message: "insufficient permissions",
		Type:    "permissions_denied",
	}}
}

// permissionsDeniedDeleted is the error the real API returns for a deleted
// resource: a 403 with empty details, which Terraform takes as "gone".
func permissionsDeniedDeleted() *apiError {
	return &apiError{status: http.StatusForbidden, errorType: "permissions_denied", body: permissionsDeniedBody{
		Details: []permissionDetail{},
		Message: "insufficient permissions",
		Type:    "permissions_denied",
	}}
}

// Reasons of a denied_authentication error.
const (
	authReasonNotFound        = "not_found"
	authReasonInvalidArgument = "invalid_argument"
	authReasonExpired         = "expired"
)

type deniedAuthenticationBody struct {
	Message string `json:"message"`
	Method  string `json:"method"`
	Reason  string `json:"reason"`
	Type    string `json:"type"`
}

func deniedAuthentication(reason string) *apiError {
	return &apiError{status: http.StatusUnauthorized, errorType: "denied_authentication", body: deniedAuthenticationBody{
		Message: "authentication is denied",
		Method:  "api_key",
		Reason:  reason,
		Type:    "denied_authentication",
	}}
}

type transientStateBody struct {
	CurrentState string `json:"current_state"`
	Message      string `json:"message"`
	Resource     string `json:"resource"`
	ResourceID   string `json:"resource_id"`
	Type         string `json:"type"`
}

func transientState(resource, id, state string) *apiError {
	return &apiError{status: http.StatusConflict, errorType: "transient_state", body: transientStateBody{
		CurrentState: state,
		Message:      "resource is in a transient state",
		Resource:     resource,
		ResourceID:   id,
		Type:         "transient_state",
	}}
}

// quotaDetail is one entry of a quotas_exceeded body. The SDK decodes quota
// and current as uint32, so they must be JSON integers.
type quotaDetail struct {
	Resource string `json:"resource"`
	Quota    uint32 `json:"quota"`
	Current  uint32 `json:"current"`
}

type quotasExceededBody struct {
	Details []quotaDetail `json:"details"`
	Message string        `json:"message"`
	Type    string        `json:"type"`
}

// quotasExceeded is sent with status 403, as api.scaleway.com does for an
// exceeded quota.
func quotasExceeded(resource string, quota, current int) *apiError {
	return &apiError{status: http.StatusForbidden, errorType: "quotas_exceeded", body: quotasExceededBody{
		Details: []quotaDetail{{Resource: resource, Quota: clampUint32(quota), Current: clampUint32(current)}},
		Message: "quota(s) exceeded for this resource",
		Type:    "quotas_exceeded",
	}}
}

func clampUint32(n int) uint32 {
	return uint32(min(max(n, 0), math.MaxUint32))
}

// Preconditions of a precondition_failed error, the values the SDK's
// PreconditionFailedError names.
const (
	preconditionUnknown            = "unknown_precondition"
	preconditionResourceStillInUse = "resource_still_in_use"
)

type preconditionFailedBody struct {
	HelpMessage  string `json:"help_message"`
	Message      string `json:"message"`
	Precondition string `json:"precondition"`
	Type         string `json:"type"`
}

func preconditionFailed(precondition, help string) *apiError {
	return &apiError{status: http.StatusPreconditionFailed, errorType: "precondition_failed", body: preconditionFailedBody{
		HelpMessage:  help,
		Message:      "precondition is not respected",
		Precondition: precondition,
		Type:         "precondition_failed",
	}}
}

type lockedBody struct {
	Message    string `json:"message"`
	Resource   string `json:"resource"`
	ResourceID string `json:"resource_id"`
	Type       string `json:"type"`
}

func locked(resource, id string) *apiError {
	return &apiError{status: http.StatusConflict, errorType: "locked", body: lockedBody{
		Message:    "resource is locked",
		Resource:   resource,
		ResourceID: id,
		Type:       "locked",
	}}
}

// genericErrorBody carries the errors that have no typed form in the SDK:
// unknown routes, wrong methods, unsupported content types, rate limiting and
// internal failures. Their types are sdblocal's own, so the SDK reports them
// as *scw.ResponseError keeping the message, which names the fix. An
// unknown route gets its own type rather than not_found, which the SDK would
// report as a missing resource with an empty name and ID.
type genericErrorBody struct {
	Message string `json:"message"`
	Type    string `json:"type"`
}

func genericError(status int, errorType, message string) *apiError {
	return &apiError{status: status, errorType: errorType, body: genericErrorBody{Message: message, Type: errorType}}
}

func internalError(cause error) *apiError {
	e := genericError(http.StatusInternalServerError, "internal_error", "internal error: see the sdblocal log")
	e.cause = cause
	return e
}

// writeError sends err as a Scaleway error body and logs it once. Errors that
// are not *apiError become a 500 whose cause stays in the log.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, principalID string, err error) {
	var apiErr *apiError
	if !errors.As(err, &apiErr) {
		apiErr = internalError(err)
	}

	level := slog.LevelInfo
	if apiErr.status >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", apiErr.status),
		slog.String("principal_id", principalID),
		slog.String("error_type", apiErr.errorType),
	}
	for _, name := range []string{"database_id", "backup_id", "application_id", "user_id", "access_key", "policy_id", "project_id"} {
		if value := r.PathValue(name); value != "" {
			attrs = append(attrs, slog.String(name, value))
		}
	}
	if apiErr.cause != nil {
		attrs = append(attrs, slog.String("error", apiErr.cause.Error()))
	}
	if body, ok := apiErr.body.(invalidArgumentsBody); ok {
		attrs = append(attrs, slog.Any("details", body.Details))
	}
	s.log.LogAttrs(r.Context(), level, "request failed", attrs...)

	writeJSON(w, apiErr.status, apiErr.body)
}
