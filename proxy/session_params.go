package proxy

import (
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Client settings and how they follow a client across backends.
//
// Backends log in with no client setting, so that any client of the role
// can use them. Each client has its wanted settings: its startup
// parameters (client_encoding, DateStyle, TimeZone, application_name,
// search_path, extra_float_digits, and any other, including the -c
// settings of options) and the reported parameters, which the backend
// announces with ParameterStatus. When a client gets a backend whose
// settings differ, the proxy sends set_config and RESET for the
// differences, ahead of the client's first message, and swallows the
// output. The ParameterStatus messages that this causes are forwarded only
// when the value differs from the one last sent to the client.
//
// A reported parameter the client changes (SET TimeZone, SET
// application_name, and so on, outside or inside a transaction) is tracked
// from its ParameterStatus and carried to the client's next backends, as
// long as the instance runs. A suspend drops those changes, as in the real
// service; the startup parameters come back on the next backend. SET of a
// parameter that the backend does not report (search_path,
// statement_timeout, extra_float_digits, ...) stays on the backend that ran
// it: in transaction mode the backend's next clients inherit it, except
// those that set the same parameter at startup or that the proxy knows to
// differ.

// excludedStartupParams are startup parameters the proxy consumes instead
// of applying them as settings.
var excludedStartupParams = map[string]bool{
	"user": true, "database": true, "options": true, "replication": true,
}

// reportedNames spells the reported parameters whose names are not all
// lower case, for the ParameterStatus messages the proxy makes itself.
var reportedNames = map[string]string{
	"datestyle": "DateStyle", "intervalstyle": "IntervalStyle", "timezone": "TimeZone",
}

// maxInternedSettings bounds the settings maps shared between clients.
const maxInternedSettings = 1000

func lowerName(name string) string { return strings.ToLower(name) }

// clientSettings returns a client's pool key and startup settings. The -c
// settings of options become settings like the startup parameters, so the
// client can use shared backends. Any other option needs backends opened
// with that options value.
func clientSettings(role string, params map[string]string, options string) (poolKey, map[string]string) {
	key := poolKey{role: role}
	settings := map[string]string{}
	for name, value := range params {
		if !excludedStartupParams[name] {
			settings[lowerName(name)] = value
		}
	}
	if options == "" {
		return key, settings
	}
	if !onlySettings(options) {
		key.options = options
		return key, settings
	}
	for name, value := range parseOptions(options).settings {
		settings[name] = value
	}
	return key, settings
}

// onlySettings reports whether every word of an options value belongs to
// a "-c name=value", "-cname=value" or "--name=value" setting.
func onlySettings(options string) bool {
	words := splitOptions(options)
	for i := 0; i < len(words); i++ {
		word := words[i]
		switch {
		case word == "-c" && i+1 < len(words) && strings.Contains(words[i+1], "="):
			i++
		case strings.HasPrefix(word, "-c") && strings.Contains(word, "="):
		case strings.HasPrefix(word, "--") && strings.Contains(word, "="):
		default:
			return false
		}
	}
	return true
}

// internSettings returns a shared map equal to settings, which callers
// must not change.
func (s *Server) internSettings(settings map[string]string) map[string]string {
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	var key strings.Builder
	for _, name := range names {
		key.WriteString(name)
		key.WriteByte(0)
		key.WriteString(settings[name])
		key.WriteByte(0)
	}
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	if shared, ok := s.pools.settings[key.String()]; ok {
		return shared
	}
	if len(s.pools.settings) < maxInternedSettings {
		s.pools.settings[key.String()] = settings
	}
	return settings
}

// setWantedLocked records a setting the client now has, copying the
// shared map first. mu must be held.
func (s *session) setWantedLocked(name, value string) {
	if s.wanted[name] == value {
		return
	}
	if !s.wantedOwned {
		owned := make(map[string]string, len(s.wanted)+1)
		for n, v := range s.wanted {
			owned[n] = v
		}
		s.wanted, s.wantedOwned = owned, true
	}
	s.wanted[name] = value
}

// applySettings writes, ahead of the client's next message, the
// set_config and RESET that give b the client's wanted settings, and
// queues done for its result. It returns false, writing nothing, when b
// already has them. The caller flushes b.w.
func (s *session) applySettings(b *backend, done func(*pgproto3.ErrorResponse)) bool {
	s.mu.Lock()
	wanted := s.wanted
	s.mu.Unlock()

	b.mu.Lock()
	var sets, resets []string
	for name, value := range wanted {
		if current, ok := b.applied[name]; !ok || current != value {
			sets = append(sets, name)
			b.applied[name] = value
		}
	}
	for name := range b.applied {
		if _, ok := wanted[name]; ok {
			continue
		}
		resets = append(resets, name)
		if value, ok := b.defaults[name]; ok {
			b.applied[name] = value
		} else {
			delete(b.applied, name)
		}
	}
	if len(sets) == 0 && len(resets) == 0 {
		b.mu.Unlock()
		return false
	}
	b.pushLocked(pending{kind: pendQuery, injected: true, call: &injectedCall{done: done}})
	b.mu.Unlock()

	sort.Strings(sets)
	sort.Strings(resets)
	var sql strings.Builder
	if len(sets) > 0 {
		sql.WriteString("SELECT ")
		for i, name := range sets {
			if i > 0 {
				sql.WriteString(", ")
			}
			sql.WriteString("pg_catalog.set_config(")
			sql.WriteString(quoteLiteral(name))
			sql.WriteString(", ")
			sql.WriteString(quoteLiteral(wanted[name]))
			sql.WriteString(", false)")
		}
	}
	for _, name := range resets {
		if sql.Len() > 0 {
			sql.WriteString("; ")
		}
		sql.WriteString("RESET ")
		sql.WriteString(quoteIdentifier(name))
	}
	if err := writeQuery(b.w, sql.String()); err != nil {
		s.logger.Warn("could not apply the client's settings to its backend", "backend_pid", b.pid, "error", err)
	}
	return true
}

// settingsApplied runs on the backend's goroutine when the settings of a
// checkout are in place. After a suspend dropped the client's changes, it
// sends the client ParameterStatus for the values it has now.
func (s *session) settingsApplied(errResp *pgproto3.ErrorResponse) {
	if errResp != nil {
		s.logger.Warn("the backend rejected the client's settings; the client's statements run with the backend's",
			"sqlstate", errResp.Code, "reason", errResp.Message)
	}
	s.mu.Lock()
	before := s.shownBefore
	s.shownBefore = nil
	wanted := s.wanted
	s.mu.Unlock()
	if before == nil {
		return
	}
	var msgs []pgproto3.BackendMessage
	for name, value := range wanted {
		if old, ok := before[name]; ok && old != value {
			reported := reportedNames[name]
			if reported == "" {
				reported = name
			}
			msgs = append(msgs, &pgproto3.ParameterStatus{Name: reported, Value: value})
		}
	}
	if len(msgs) > 0 {
		_ = s.sendMessages(msgs...)
	}
}

// onParameterStatus records a reported parameter of the client's backend
// and forwards it, unless an injected query caused it. It returns errors
// reading the backend only.
func (s *session) onParameterStatus(name, lower, value string, settable, injected bool, header [5]byte, raw []byte) error {
	s.mu.Lock()
	if settable {
		s.setWantedLocked(lower, value)
	}
	forward := s.loggedIn && !injected
	s.mu.Unlock()
	if !forward {
		return nil
	}
	return s.writeRawFromBackend(header, raw)
}

// quoteLiteral quotes s as an escape string constant, which reads the
// same whatever standard_conforming_strings is.
func quoteLiteral(s string) string {
	var b strings.Builder
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(s[i])
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// quoteIdentifier quotes a parameter name for RESET.
func quoteIdentifier(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// loginResult is the outcome of a login with given settings: the
// canonical wanted settings and the parameters to report.
type loginResult struct {
	wanted   map[string]string
	reported map[string]string
}

// maxCachedLogins bounds the login results a pool keeps.
const maxCachedLogins = 100

// loginCacheKey identifies the logins that get the same result: same
// role, options and startup settings.
func loginCacheKey(key poolKey, startup map[string]string) string {
	names := make([]string, 0, len(startup))
	for name := range startup {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(key.role)
	b.WriteByte(0)
	b.WriteString(key.options)
	b.WriteByte(0)
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte(0)
		b.WriteString(startup[name])
		b.WriteByte(0)
	}
	return b.String()
}

func (p *dbPool) cachedLogin(key string) *loginResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logins[key]
}

func (p *dbPool) storeLogin(key string, result *loginResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logins == nil {
		p.logins = map[string]*loginResult{}
	}
	if len(p.logins) < maxCachedLogins {
		p.logins[key] = result
	}
}
