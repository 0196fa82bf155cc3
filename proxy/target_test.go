package proxy

import (
	"strings"
	"testing"
)

func TestResolveTarget(t *testing.T) {
	const (
		id    = "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64"
		other = "0d6c5f7e-2a4b-4c3d-8e9f-1a2b3c4d5e6f"
	)
	cases := []struct {
		name       string
		routing    RoutingMode
		serverName string
		optionID   string
		wantID     string
		wantMethod routeMethod
		wantCode   string
		wantText   string
	}{
		{name: "SNI", serverName: id + ".pg.sdb.localhost", wantID: id, wantMethod: routeBySNI},
		{name: "option", optionID: id, wantID: id, wantMethod: routeByOption},
		{name: "upper-case option", optionID: strings.ToUpper(id), wantID: id, wantMethod: routeByOption},
		{name: "SNI and same option", serverName: id + ".pg.sdb.localhost", optionID: strings.ToUpper(id), wantID: id, wantMethod: routeBySNI},
		{name: "plain host name", serverName: "localhost", optionID: id, wantID: id, wantMethod: routeByOption},
		{name: "suffix alone", serverName: "pg.sdb.localhost", wantMethod: routeByName},
		{name: "nothing relaxed", wantMethod: routeByName},
		{name: "SNI and other option", serverName: id + ".pg.sdb.localhost", optionID: other, wantCode: codeInvalidParameterValue, wantText: id + ` in the TLS server name "` + id + `.pg.sdb.localhost" differs from database ID ` + other},
		{name: "SNI not a UUID", serverName: "shop.pg.sdb.localhost", wantCode: codeInvalidParameterValue, wantText: `invalid TLS server name "shop.pg.sdb.localhost"`},
		{name: "SNI two labels", serverName: "a." + id + ".pg.sdb.localhost", wantCode: codeInvalidParameterValue, wantText: "is not a database ID"},
		{name: "option not a UUID", optionID: "shop", wantCode: codeInvalidParameterValue, wantText: `invalid value for option databaseid: "shop"`},
		{name: "nothing strict", routing: RoutingStrict, wantCode: codeInvalidAuthorization, wantText: "Database hostname wasn't sent to server"},
		{name: "plain host name strict", routing: RoutingStrict, serverName: "localhost", wantCode: codeInvalidAuthorization, wantText: "Database hostname wasn't sent to server"},
		{name: "SNI strict", routing: RoutingStrict, serverName: id + ".pg.sdb.localhost", wantID: id, wantMethod: routeBySNI},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Routing: tc.routing}
			cfg.setDefaults()
			s := &Server{cfg: cfg}
			got, werr := s.resolveTarget(tc.serverName, tc.optionID)
			if tc.wantCode != "" {
				if werr == nil {
					t.Fatalf("target %+v, want error %s", got, tc.wantCode)
				}
				if werr.code != tc.wantCode {
					t.Errorf("SQLSTATE %s, want %s (%s)", werr.code, tc.wantCode, werr.message)
				}
				if !strings.Contains(werr.message, tc.wantText) {
					t.Errorf("message %q does not contain %q", werr.message, tc.wantText)
				}
				return
			}
			if werr != nil {
				t.Fatalf("error %v", werr)
			}
			if got.databaseID != tc.wantID || got.method != tc.wantMethod {
				t.Errorf("target %+v, want ID %q by %s", got, tc.wantID, tc.wantMethod)
			}
		})
	}
}

func TestCheckClientEncoding(t *testing.T) {
	for _, ok := range []string{"", "UTF8", "utf8", "UNICODE", "utf-8", "UTF_8"} {
		if werr := checkClientEncoding(map[string]string{"client_encoding": ok}, parsedOptions{}); werr != nil {
			t.Errorf("client_encoding %q rejected: %v", ok, werr)
		}
	}
	for _, bad := range []string{"SQL_ASCII", "LATIN1", "auto", "utf16"} {
		werr := checkClientEncoding(map[string]string{"client_encoding": bad}, parsedOptions{})
		if werr == nil {
			t.Errorf("client_encoding %q accepted", bad)
			continue
		}
		if werr.code != codeInvalidParameterValue || werr.message != `invalid value for parameter "client_encoding": "`+bad+`"` {
			t.Errorf("client_encoding %q: %s %q", bad, werr.code, werr.message)
		}
	}
	if werr := checkClientEncoding(nil, parseOptions("-c Client_Encoding=LATIN1")); werr == nil {
		t.Error("client_encoding in options accepted")
	}
}

func TestParseOptionsSettings(t *testing.T) {
	got := parseOptions(`-c search_path=app --work_mem=8MB -cstatement_timeout=5s -c databaseid=x`)
	want := map[string]string{"search_path": "app", "work_mem": "8MB", "statement_timeout": "5s"}
	if len(got.settings) != len(want) {
		t.Errorf("settings %v, want %v", got.settings, want)
	}
	for name, value := range want {
		if got.settings[name] != value {
			t.Errorf("setting %s = %q, want %q", name, got.settings[name], value)
		}
	}
	if got.rest != "-c search_path=app --work_mem=8MB -cstatement_timeout=5s" {
		t.Errorf("rest %q", got.rest)
	}
}
