package proxy

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the proxy sends itself (PostgreSQL's errcodes.txt).
const (
	codeProtocolViolation     = "08P01"
	codeInvalidAuthorization  = "28000"
	codeInvalidPassword       = "28P01"
	codeInvalidCatalogName    = "3D000"
	codeTooManyConnections    = "53300"
	codeObjectNotInState      = "55000"
	codeAdminShutdown         = "57P01"
	codeCannotConnectNow      = "57P03"
	codeSystemError           = "58000"
	codeConnectionFailure     = "08006"
	codeFeatureNotSupported   = "0A000"
	codeInvalidParameterValue = "22023"
	codeQueryCanceled         = "57014"
)

// wireError is an error the client sees as an ErrorResponse.
type wireError struct {
	severity string // ERROR or FATAL
	code     string
	message  string
	detail   string
	hint     string
}

func (e *wireError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.severity, e.code, e.message)
}

func fatalf(code, format string, args ...any) *wireError {
	return &wireError{severity: "FATAL", code: code, message: fmt.Sprintf(format, args...)}
}

func (e *wireError) withHint(hint string) *wireError {
	e.hint = hint
	return e
}

func (e *wireError) toMessage() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            e.severity,
		SeverityUnlocalized: e.severity,
		Code:                e.code,
		Message:             e.message,
		Detail:              e.detail,
		Hint:                e.hint,
	}
}

// fromPgError turns an error PostgreSQL sent while the proxy opened a
// backend connection (a bad runtime parameter, say) into the same error
// for the client.
func fromPgError(pgErr *pgconn.PgError) *wireError {
	severity := pgErr.Severity
	if severity == "" {
		severity = "FATAL"
	}
	return &wireError{severity: severity, code: pgErr.Code, message: pgErr.Message, detail: pgErr.Detail, hint: pgErr.Hint}
}
