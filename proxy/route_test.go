package proxy

import "testing"

func TestParseOptions(t *testing.T) {
	const id = "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64"
	cases := []struct {
		options string
		wantID  string
		rest    string
	}{
		{"", "", ""},
		{"databaseid=" + id, id, ""},
		{"-c databaseid=" + id, id, ""},
		{"-cdatabaseid=" + id, id, ""},
		{"--databaseid=" + id, id, ""},
		{"-c search_path=app -c databaseid=" + id, id, "-c search_path=app"},
		{"-c DatabaseID=" + id + " -c work_mem=8MB", id, "-c work_mem=8MB"},
		{`-c application_name=a\ b`, "", `-c application_name=a\ b`},
		{"-c", "", "-c"},
		{"databaseid=", "", ""},
	}
	for _, tc := range cases {
		got := parseOptions(tc.options)
		if got.databaseID != tc.wantID {
			t.Errorf("parseOptions(%q).databaseID = %q, want %q", tc.options, got.databaseID, tc.wantID)
		}
		if got.rest != tc.rest {
			t.Errorf("parseOptions(%q).rest = %q, want %q", tc.options, got.rest, tc.rest)
		}
	}
}
