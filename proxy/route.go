package proxy

import (
	"strings"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// routingOption is the startup option that names the database, in the form
// the real service documents: options=databaseid%3D<id>, or -c databaseid=<id>.
const routingOption = "databaseid"

// parsedOptions is the startup "options" value split into the routing
// option and the rest, which goes to the backend unchanged.
type parsedOptions struct {
	databaseID string
	rest       string
	// settings are the run-time parameters that PostgreSQL applies from
	// rest, by lower-case name, for the checks the proxy makes before they
	// reach the backend.
	settings map[string]string
}

// parseOptions splits a libpq options string into words as PostgreSQL's
// pg_split_opts does, and picks out databaseid in any of its accepted
// spellings: "databaseid=X", "-c databaseid=X", "-cdatabaseid=X" and
// "--databaseid=X".
func parseOptions(options string) parsedOptions {
	words := splitOptions(options)
	var out parsedOptions
	var kept []string
	for i := 0; i < len(words); i++ {
		word := words[i]
		setting := ""
		consumed := 1
		switch {
		case word == "-c" && i+1 < len(words):
			setting, consumed = words[i+1], 2
		case strings.HasPrefix(word, "-c"):
			setting = word[2:]
		case strings.HasPrefix(word, "--"):
			setting = word[2:]
		case strings.HasPrefix(word, routingOption+"="):
			setting = word
		}
		name, value, ok := strings.Cut(setting, "=")
		if ok && strings.EqualFold(name, routingOption) {
			out.databaseID = value
			i += consumed - 1
			continue
		}
		kept = append(kept, words[i:i+consumed]...)
		i += consumed - 1
	}
	out.settings = backendSettings(kept)
	rest := make([]string, len(kept))
	for i, word := range kept {
		rest[i] = escapeOption(word)
	}
	out.rest = strings.Join(rest, " ")
	return out
}

// isOptionSpace reports whether c ends a word of the options value: the
// bytes for which isspace() is true in the C locale, as pg_split_opts
// tests them.
func isOptionSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// splitOptions splits the options value as PostgreSQL 14's pg_split_opts
// does: a backslash makes the next byte part of the word, and a trailing
// backslash is dropped. Empty words, which only a lone trailing backslash
// makes, are left out.
func splitOptions(s string) []string {
	var words []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
		case isOptionSpace(c):
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

func escapeOption(word string) string {
	var b strings.Builder
	for i := 0; i < len(word); i++ {
		if word[i] == '\\' || isOptionSpace(word[i]) {
			b.WriteByte('\\')
		}
		b.WriteByte(word[i])
	}
	return b.String()
}

// Switches of PostgreSQL 14's process_postgres_switches, which parses the
// options words with getopt and the option string
// "B:bC:c:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:".
const (
	switchesWithValue    = "BcCDdfhkNprStvW-"
	switchesWithoutValue = "bEeFijlnOPsT"
)

// backendSettings returns the run-time parameters that PostgreSQL sets
// from the options words, the way getopt reads them: switches may be
// bundled ("-ec name=value" is -e, then -c), a switch that takes a value
// takes the rest of its word or else the next word, and "-c name=value"
// or "--name=value" set a parameter whose name has its dashes read as
// underscores (ParseLongOption). Parsing stops at the first word that is
// not a switch, where PostgreSQL rejects the connection.
func backendSettings(words []string) map[string]string {
	settings := map[string]string{}
	for i := 0; i < len(words); i++ {
		word := words[i]
		if len(word) < 2 || word[0] != '-' || word == "--" {
			return settings
		}
		for j := 1; j < len(word); j++ {
			c := word[j]
			if strings.IndexByte(switchesWithoutValue, c) >= 0 {
				continue
			}
			if strings.IndexByte(switchesWithValue, c) < 0 {
				return settings
			}
			value := word[j+1:]
			if value == "" {
				if i+1 == len(words) {
					return settings
				}
				i++
				value = words[i]
			}
			if c == 'c' || c == '-' {
				if name, setting, ok := strings.Cut(value, "="); ok {
					settings[strings.ToLower(strings.ReplaceAll(name, "-", "_"))] = setting
				}
			}
			break
		}
	}
	return settings
}

// routeMethod is the source of a client's database ID, and the label of
// sdblocal_proxy_routed_connections_total.
type routeMethod string

const (
	routeBySNI    routeMethod = "sni"
	routeByOption routeMethod = "option"
	routeByName   routeMethod = "name"
)

// target is the database ID a client named before authenticating, and how
// it named it. databaseID is empty for a client routed by name.
type target struct {
	databaseID string
	method     routeMethod
}

// resolveTarget finds the database ID in the TLS server name and in the
// databaseid option. It runs before authentication and checks only their
// form and agreement, so it reveals nothing about which databases exist.
func (s *Server) resolveTarget(serverName, optionID string) (target, *wireError) {
	sniID, werr := s.databaseIDFromServerName(serverName)
	if werr != nil {
		return target{}, werr
	}
	if optionID != "" {
		if !validDatabaseID(optionID) {
			return target{}, fatalf(codeInvalidParameterValue, "invalid value for option databaseid: %q is not a database ID (a UUID)", optionID)
		}
		optionID = strings.ToLower(optionID)
	}
	switch {
	case sniID != "" && optionID != "" && sniID != optionID:
		return target{}, fatalf(codeInvalidParameterValue, "database ID %s in the TLS server name %q differs from database ID %s in option databaseid", sniID, serverName, optionID).
			withHint("Connect to <database-id>." + s.cfg.SNISuffix + " with the same databaseid option, or leave the option out.")
	case sniID != "":
		return target{databaseID: sniID, method: routeBySNI}, nil
	case optionID != "":
		return target{databaseID: optionID, method: routeByOption}, nil
	case s.cfg.Routing == RoutingStrict:
		// The real service's wording, which lib/pq shows as
		// "pq: Database hostname wasn't sent to server".
		// NOTE: the service does not document the SQLSTATE; 28000 is the
		// code PostgreSQL uses for a missing user name.
		return target{}, fatalf(codeInvalidAuthorization, "Database hostname wasn't sent to server").
			withHint("Connect to <database-id>." + s.cfg.SNISuffix + " with a client that sends TLS SNI, or pass options=databaseid=<database-id>.")
	}
	return target{method: routeByName}, nil
}

// databaseIDFromServerName returns the database ID of a server name of the
// form <database-id>.<SNISuffix>, and "" for any other name, such as
// localhost, so that clients connecting by a plain host name still work.
func (s *Server) databaseIDFromServerName(serverName string) (string, *wireError) {
	label, ok := strings.CutSuffix(serverName, "."+s.cfg.SNISuffix)
	if !ok || label == "" {
		return "", nil
	}
	if !validDatabaseID(label) {
		return "", fatalf(codeInvalidParameterValue, "invalid TLS server name %q: %q is not a database ID (a UUID)", serverName, label).
			withHint("Connect to <database-id>." + s.cfg.SNISuffix + ", with the database ID the API returns.")
	}
	return strings.ToLower(label), nil
}

// validDatabaseID reports whether id is a UUID in its 36-character form.
func validDatabaseID(id string) bool {
	if len(id) != 36 {
		return false
	}
	_, err := uuid.Parse(id)
	return err == nil
}

// route finds the database a client asked for and checks that the
// principal may connect to it: the database ID of t, or else a database
// name (or ID) that identifies exactly one database the principal may use.
func (s *Server) route(identity auth.Identity, t target, databaseName string) (catalog.Database, *wireError) {
	principalID := identity.Principal.ID
	if t.databaseID != "" {
		var db catalog.Database
		err := s.cat.View(func(tx *catalog.Tx) error {
			var err error
			db, err = tx.Database(t.databaseID)
			return err
		})
		if err != nil {
			return catalog.Database{}, fatalf(codeInvalidCatalogName, "database %q does not exist", t.databaseID)
		}
		allowed, err := s.canConnect(identity, db)
		if err != nil {
			return catalog.Database{}, fatalf(codeSystemError, "could not check permissions: %v", err)
		}
		if !allowed {
			return catalog.Database{}, fatalf(codeInvalidAuthorization, "principal %s does not have permission to access database %s", principalID, db.ID)
		}
		return db, nil
	}

	var candidates []catalog.Database
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		candidates, err = tx.Databases(func(d *catalog.Database) bool {
			return d.Name == databaseName || d.ID == strings.ToLower(databaseName)
		})
		return err
	})
	if err != nil {
		return catalog.Database{}, fatalf(codeSystemError, "could not read the catalog: %v", err)
	}
	var matches []catalog.Database
	for _, db := range candidates {
		allowed, err := s.canConnect(identity, db)
		if err != nil {
			return catalog.Database{}, fatalf(codeSystemError, "could not check permissions: %v", err)
		}
		if allowed {
			matches = append(matches, db)
		}
	}
	switch len(matches) {
	case 0:
		return catalog.Database{}, fatalf(codeInvalidCatalogName, "database %q does not exist", databaseName).
			withHint("Pass the database ID with options=databaseid=<id>, as in the endpoint the API returns.")
	case 1:
		return matches[0], nil
	}
	return catalog.Database{}, fatalf(codeInvalidCatalogName, "database name %q matches %d databases you can access", databaseName, len(matches)).
		withHint("Pass the database ID with options=databaseid=<id>, as in the endpoint the API returns.")
}

func (s *Server) canConnect(identity auth.Identity, db catalog.Database) (bool, error) {
	return s.authn.Authorize(identity.Principal, db.OrganizationID, db.ProjectID, auth.ActionConnect)
}

// checkReady rejects databases that cannot take connections yet or any more.
func checkReady(db catalog.Database) *wireError {
	switch db.Status {
	case catalog.StatusReady:
		return nil
	case catalog.StatusDeleting:
		return fatalf(codeInvalidCatalogName, "database %s is being deleted", db.ID)
	default:
		return fatalf(codeObjectNotInState, "database %s is not ready (status %s)", db.ID, db.Status).
			withHint("Wait until the API reports status ready, then connect again.")
	}
}
