package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

func openCatalog(t *testing.T) (*catalog.Catalog, string) {
	t.Helper()
	dir := t.TempDir()
	cat, err := catalog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return cat, dir
}

func TestAccessKeyFormat(t *testing.T) {
	for range 100 {
		key, err := NewAccessKey()
		if err != nil {
			t.Fatal(err)
		}
		if !ValidAccessKey(key) {
			t.Fatalf("NewAccessKey() = %q, not SCW + 17 of [A-Z0-9]", key)
		}
	}
	for _, bad := range []string{"", "SCW", "SCWabcdefghijklmnopq", "XYZ12345678901234567", "SCW123456789012345678"} {
		if ValidAccessKey(bad) {
			t.Errorf("ValidAccessKey(%q) = true", bad)
		}
	}
}

func TestVerifierChecksSecret(t *testing.T) {
	secret := NewSecretKey()
	v, err := NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	if v.Iterations != SCRAMIterations || len(v.Salt) != saltLength || len(v.StoredKey) != 32 || len(v.ServerKey) != 32 {
		t.Errorf("verifier shape: iterations %d, salt %d, stored key %d, server key %d bytes", v.Iterations, len(v.Salt), len(v.StoredKey), len(v.ServerKey))
	}
	if !CheckSecret(v, secret) {
		t.Error("CheckSecret rejects the right secret")
	}
	if CheckSecret(v, NewSecretKey()) {
		t.Error("CheckSecret accepts another secret")
	}
	if CheckSecret(catalog.SCRAMVerifier{}, secret) {
		t.Error("CheckSecret accepts an empty verifier")
	}
	if strings.Contains(string(v.StoredKey)+string(v.ServerKey)+string(v.Salt), secret) {
		t.Error("verifier contains the secret")
	}
}

func TestCredentialsFromEnv(t *testing.T) {
	valid := map[string]string{
		EnvAccessKey:      "SCWABCDEFGHIJ1234567",
		EnvSecretKey:      "8F3C2A61-1E2B-4C5D-9E8F-0A1B2C3D4E5F",
		EnvOrganizationID: "11111111-2222-4333-8444-555555555555",
		EnvProjectID:      "66666666-7777-4888-9999-000000000000",
	}
	getenv := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	creds, err := CredentialsFromEnv(getenv(valid))
	if err != nil || creds == nil {
		t.Fatalf("valid environment: %v, %v", creds, err)
	}
	if creds.SecretKey != strings.ToLower(valid[EnvSecretKey]) {
		t.Errorf("secret key not normalised to lower case: %q", creds.SecretKey)
	}
	if creds, err := CredentialsFromEnv(getenv(nil)); creds != nil || err != nil {
		t.Errorf("empty environment: %v, %v; want nil, nil", creds, err)
	}

	cases := []struct {
		name, variable, value, want string
	}{
		{"missing secret", EnvSecretKey, "", EnvSecretKey + " missing"},
		{"bad access key", EnvAccessKey, "scw-nope", EnvAccessKey},
		{"bad secret", EnvSecretKey, "not-a-uuid", EnvSecretKey + " is invalid"},
		{"bad organization", EnvOrganizationID, "org", EnvOrganizationID},
		{"bad project", EnvProjectID, "proj", EnvProjectID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			env[tc.variable] = tc.value
			_, err := CredentialsFromEnv(getenv(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v does not mention %q", err, tc.want)
			}
		})
	}
}

func TestBootstrapGeneratesOwner(t *testing.T) {
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ValidAccessKey(creds.AccessKey) || !ValidSecretKey(creds.SecretKey) || !ValidUUID(creds.ProjectID) {
		t.Errorf("generated credentials have the wrong form: %+v", creds)
	}
	info, err := os.Stat(filepath.Join(dir, CredentialsFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: %v, %v; want mode 0600", info, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, catalog.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), creds.SecretKey) {
		t.Error("the catalog file contains the secret key in clear")
	}

	again, err := Bootstrap(cat, dir, nil)
	if err != nil || again != creds {
		t.Errorf("second bootstrap: %+v, %v; want the same credentials", again, err)
	}
	other := creds
	other.AccessKey = "SCWZZZZZZZZZZZZZZZZZ"
	if _, err := Bootstrap(cat, dir, &other); err == nil {
		t.Error("a later start accepted an access key the catalog does not hold")
	}
}

func TestAuthenticatePassword(t *testing.T) {
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthenticator(cat)

	id, err := a.AuthenticatePassword(creds.PrincipalID, creds.SecretKey)
	if err != nil || id.Principal.ID != creds.PrincipalID || id.AccessKey != creds.AccessKey {
		t.Fatalf("right secret: %+v, %v", id, err)
	}
	for name, attempt := range map[string][2]string{
		"wrong secret":      {creds.PrincipalID, NewSecretKey()},
		"unknown principal": {NewSecretKey(), creds.SecretKey},
		"empty password":    {creds.PrincipalID, ""},
	} {
		if _, err := a.AuthenticatePassword(attempt[0], attempt[1]); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("%s: error %v, want ErrInvalidCredentials", name, err)
		}
	}

	past := time.Now().Add(-time.Minute)
	err = cat.Update(func(tx *catalog.Tx) error {
		key, err := tx.APIKey(creds.AccessKey)
		if err != nil {
			return err
		}
		if err := tx.DeleteAPIKey(key.AccessKey); err != nil {
			return err
		}
		key.ExpiresAt = &past
		return tx.PutAPIKey(key)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticatePassword(creds.PrincipalID, creds.SecretKey); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("expired key on the wire: error %v, want ErrInvalidCredentials", err)
	}
	if _, err := a.AuthenticateToken(creds.SecretKey); !errors.Is(err, ErrExpiredKey) {
		t.Errorf("expired key as a token: error %v, want ErrExpiredKey", err)
	}
}

func TestPermissionSets(t *testing.T) {
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthenticator(cat)
	member := catalog.Principal{ID: NewSecretKey(), OrganizationID: creds.OrganizationID, Kind: catalog.PrincipalApplication}
	otherProject := NewSecretKey()
	err = cat.Update(func(tx *catalog.Tx) error {
		if err := tx.PutPrincipal(member); err != nil {
			return err
		}
		return tx.PutPolicy(catalog.Policy{ID: NewSecretKey(), OrganizationID: creds.OrganizationID, PrincipalID: member.ID, Rules: []catalog.Rule{
			{PermissionSetNames: []string{string(ReadOnly)}, ProjectIDs: []string{creds.ProjectID}},
		}})
	})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		project string
		action  Action
		want    bool
	}{
		{creds.ProjectID, ActionRead, true},
		{creds.ProjectID, ActionConnect, true},
		{creds.ProjectID, ActionManage, false},
		{otherProject, ActionRead, false},
		{otherProject, ActionConnect, false},
	}
	for _, tc := range cases {
		got, err := a.Authorize(member, creds.OrganizationID, tc.project, tc.action)
		if err != nil || got != tc.want {
			t.Errorf("ReadOnly member, %s on project %s: %v, %v; want %v", tc.action, tc.project, got, err, tc.want)
		}
	}
	owner := catalog.Principal{ID: creds.PrincipalID, OrganizationID: creds.OrganizationID, Owner: true}
	if ok, _ := a.Authorize(owner, creds.OrganizationID, otherProject, ActionManage); !ok {
		t.Error("the owner may not manage a project of its organization")
	}
	if ok, _ := a.Authorize(owner, NewSecretKey(), creds.ProjectID, ActionRead); ok {
		t.Error("the owner may read in another organization")
	}
}
