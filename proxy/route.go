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
}

// parseOptions splits a libpq options string into whitespace-separated
// words, honouring backslash escapes as PostgreSQL's pg_split_opts does,
// and picks out databaseid in any of its accepted spellings: "databaseid=X",
// "-c databaseid=X", "-cdatabaseid=X" and "--databaseid=X".
func parseOptions(options string) parsedOptions {
	words := splitOptions(options)
	var out parsedOptions
	var rest []string
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
		if name, value, ok := strings.Cut(setting, "="); ok && strings.EqualFold(name, routingOption) {
			out.databaseID = value
			i += consumed - 1
			continue
		}
		rest = append(rest, escapeOption(word))
	}
	out.rest = strings.Join(rest, " ")
	return out
}

func splitOptions(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func escapeOption(word string) string {
	var b strings.Builder
	for i := 0; i < len(word); i++ {
		if word[i] == ' ' || word[i] == '\\' || word[i] == '\t' {
			b.WriteByte('\\')
		}
		b.WriteByte(word[i])
	}
	return b.String()
}

// route finds the database a client asked for and checks that the
// principal may connect to it. It tries the databaseid option first, then
// a database name (or ID) that identifies exactly one database the
// principal may use.
func (s *Server) route(identity auth.Identity, databaseID, databaseName string) (catalog.Database, *wireError) {
	principalID := identity.Principal.ID
	if databaseID != "" {
		if _, err := uuid.Parse(databaseID); err != nil || len(databaseID) != 36 {
			return catalog.Database{}, fatalf(codeInvalidParameterValue, "invalid value for option databaseid: %q is not a database ID (a UUID)", databaseID)
		}
		databaseID = strings.ToLower(databaseID)
		var db catalog.Database
		err := s.cat.View(func(tx *catalog.Tx) error {
			var err error
			db, err = tx.Database(databaseID)
			return err
		})
		if err != nil {
			return catalog.Database{}, fatalf(codeInvalidCatalogName, "database %q does not exist", databaseID)
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
