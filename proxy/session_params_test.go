package proxy

import "testing"

func TestQuoteLiteral(t *testing.T) {
	cases := map[string]string{
		"UTC":             `E'UTC'`,
		"it's":            `E'it''s'`,
		`C:\path`:         `E'C:\\path'`,
		`"$user", public`: `E'"$user", public'`,
	}
	for in, want := range cases {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestQuoteIdentifier(t *testing.T) {
	if got := quoteIdentifier(`a"b`); got != `"a""b"` {
		t.Errorf(`quoteIdentifier(a"b) = %s`, got)
	}
}

func TestClientSettingsKey(t *testing.T) {
	cases := []struct {
		name        string
		options     string
		wantOptions string
		wantSetting string
	}{
		{"no options", "", "", ""},
		{"-c setting", "-c search_path=app", "", "app"},
		{"joined -c setting", "-csearch_path=app", "", "app"},
		{"long setting", "--search-path=app", "", "app"},
		{"other switch", "-e -c search_path=app", "-e -c search_path=app", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]string{"user": "u", "database": "d", "TimeZone": "UTC", "options": tc.options}
			key, settings := clientSettings("role_admin", params, tc.options)
			if key.role != "role_admin" || key.options != tc.wantOptions {
				t.Errorf("key = %+v, want options %q", key, tc.wantOptions)
			}
			if settings["timezone"] != "UTC" {
				t.Errorf("settings[timezone] = %q, want UTC", settings["timezone"])
			}
			for _, excluded := range []string{"user", "database", "options"} {
				if _, ok := settings[excluded]; ok {
					t.Errorf("settings contain %s", excluded)
				}
			}
			if settings["search_path"] != tc.wantSetting {
				t.Errorf("settings[search_path] = %q, want %q", settings["search_path"], tc.wantSetting)
			}
		})
	}
}

func TestLoginCacheKeyOrder(t *testing.T) {
	key := poolKey{role: "role_admin"}
	a := loginCacheKey(key, map[string]string{"a": "1", "b": "2"})
	b := loginCacheKey(key, map[string]string{"b": "2", "a": "1"})
	if a != b {
		t.Error("loginCacheKey depends on map order")
	}
	if a == loginCacheKey(poolKey{role: "role_readonly"}, map[string]string{"a": "1", "b": "2"}) {
		t.Error("loginCacheKey ignores the role")
	}
	if a == loginCacheKey(key, map[string]string{"a": "12"}) {
		t.Error("loginCacheKey confuses a=1,b=2 with a=12")
	}
}

func TestResponseQueue(t *testing.T) {
	var q responseQueue
	q.push(pending{kind: pendCopyDone})
	q.push(pending{kind: pendParse})
	q.push(pending{kind: pendSync})
	q.push(pending{kind: pendCopyDone})
	q.push(pending{kind: pendSync})
	if f := q.front(); f == nil || f.kind != pendParse {
		t.Fatalf("front = %+v, want the Parse after the leading CopyDone marker", f)
	}
	q.removeAt(2)
	if q.len() != 3 || q.at(2).kind != pendSync {
		t.Errorf("after removeAt(2): len %d, at(2) %v", q.len(), q.at(2).kind)
	}
	for _, want := range []pendingKind{pendParse, pendSync, pendSync} {
		if got := q.pop().kind; got != want {
			t.Errorf("pop = %v, want %v", got, want)
		}
	}
	if q.front() != nil || q.len() != 0 {
		t.Error("queue not empty after popping everything")
	}
}

func TestObserveQuery(t *testing.T) {
	var p preparedStatements
	for _, name := range []string{"a", "b"} {
		if _, werr := p.add(name, []byte("SELECT 1\x00\x00\x00"), 20, PoolTransaction); werr != nil {
			t.Fatal(werr)
		}
	}
	if got := p.observeQuery([]byte("deallocate prepare a;\x00")); got != effectNone || p.lookup("a") != nil || p.lookup("b") == nil {
		t.Errorf("DEALLOCATE PREPARE a: effect %v, a %v, b %v", got, p.lookup("a"), p.lookup("b"))
	}
	if got := p.observeQuery([]byte("DISCARD ALL\x00")); got != effectDiscardAll || p.lookup("b") != nil || p.bytes != 0 {
		t.Errorf("DISCARD ALL: effect %v, b %v, bytes %d", got, p.lookup("b"), p.bytes)
	}
	if got := p.observeQuery([]byte("reset all\x00")); got != effectResetAll {
		t.Errorf("RESET ALL: effect %v", got)
	}
}

func TestStatementBackendNames(t *testing.T) {
	var p preparedStatements
	a, _ := p.add("S_1", []byte("SELECT 1\x00\x00\x00"), 20, PoolTransaction)
	var q preparedStatements
	b, _ := q.add("other", []byte("SELECT 1\x00\x00\x00"), 20, PoolTransaction)
	c, _ := q.add("S_1", []byte("SELECT 2\x00\x00\x00"), 20, PoolTransaction)
	if a.backendName != b.backendName {
		t.Errorf("one query under two client names: backend names %s and %s, want one", a.backendName, b.backendName)
	}
	if a.backendName == c.backendName {
		t.Error("two queries under one client name share a backend name")
	}
	s, _ := p.add("mine", []byte("SELECT 1\x00\x00\x00"), 20, PoolSession)
	if s.backendName != "mine" {
		t.Errorf("session mode backend name = %s, want the client's", s.backendName)
	}
}
