package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/catalog"
)

// CredentialsFileName is the file in the data directory that keeps the owner
// principal's secret key in plain text, mode 0600, so its owner can read it
// back with `sdblocal env`. It is the only place a secret is stored in clear.
const CredentialsFileName = "credentials.json"

// Credentials are the owner's identifiers and API key.
type Credentials struct {
	AccessKey      string `json:"access_key"`
	SecretKey      string `json:"secret_key"`
	OrganizationID string `json:"organization_id"`
	ProjectID      string `json:"project_id"`
	PrincipalID    string `json:"principal_id"`
}

// The Scaleway SDK's environment variables that bootstrap reads.
const (
	EnvAccessKey      = "SCW_ACCESS_KEY"
	EnvSecretKey      = "SCW_SECRET_KEY"
	EnvOrganizationID = "SCW_DEFAULT_ORGANIZATION_ID"
	EnvProjectID      = "SCW_DEFAULT_PROJECT_ID"
)

// CredentialsFromEnv reads the four SCW_ variables through getenv. It returns
// nil when none is set, and an error naming what is missing or malformed when
// only some are set or a value has the wrong form.
func CredentialsFromEnv(getenv func(string) string) (*Credentials, error) {
	c := Credentials{
		AccessKey:      getenv(EnvAccessKey),
		SecretKey:      getenv(EnvSecretKey),
		OrganizationID: getenv(EnvOrganizationID),
		ProjectID:      getenv(EnvProjectID),
	}
	values := map[string]string{
		EnvAccessKey: c.AccessKey, EnvSecretKey: c.SecretKey,
		EnvOrganizationID: c.OrganizationID, EnvProjectID: c.ProjectID,
	}
	var missing []string
	for _, name := range []string{EnvAccessKey, EnvSecretKey, EnvOrganizationID, EnvProjectID} {
		if values[name] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) == 4 {
		return nil, nil
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s set but %s missing: set all four to use your own credentials, or none to have them generated",
			strings.Join(setNames(values, missing), ", "), strings.Join(missing, ", "))
	}
	if !ValidAccessKey(c.AccessKey) {
		return nil, fmt.Errorf("%s=%q is invalid: expected SCW followed by 17 upper-case letters or digits", EnvAccessKey, c.AccessKey)
	}
	if !ValidSecretKey(c.SecretKey) {
		return nil, fmt.Errorf("%s is invalid: expected a UUID", EnvSecretKey)
	}
	if !ValidUUID(c.OrganizationID) {
		return nil, fmt.Errorf("%s=%q is invalid: expected a UUID", EnvOrganizationID, c.OrganizationID)
	}
	if !ValidUUID(c.ProjectID) {
		return nil, fmt.Errorf("%s=%q is invalid: expected a UUID", EnvProjectID, c.ProjectID)
	}
	c.SecretKey = strings.ToLower(c.SecretKey)
	c.OrganizationID = strings.ToLower(c.OrganizationID)
	c.ProjectID = strings.ToLower(c.ProjectID)
	return &c, nil
}

func setNames(values map[string]string, missing []string) []string {
	var out []string
	for _, name := range []string{EnvAccessKey, EnvSecretKey, EnvOrganizationID, EnvProjectID} {
		if values[name] != "" {
			out = append(out, name)
		}
	}
	return out
}

// Bootstrap prepares the catalog's IAM records on first start: an
// organization, a default project, an owner principal and its API key, from
// fromEnv when given and generated otherwise. The credentials are written to
// the credentials file. On later starts it reads that file back, and checks
// that fromEnv, when given, names a key the catalog already holds.
func Bootstrap(cat *catalog.Catalog, dataDir string, fromEnv *Credentials) (Credentials, error) {
	empty, err := cat.Empty()
	if err != nil {
		return Credentials{}, err
	}
	if !empty {
		stored, err := ReadCredentials(dataDir)
		if err != nil {
			return Credentials{}, err
		}
		if fromEnv != nil {
			if err := checkKnownKey(cat, *fromEnv); err != nil {
				return Credentials{}, err
			}
		}
		return stored, nil
	}

	creds, err := newCredentials(fromEnv)
	if err != nil {
		return Credentials{}, err
	}
	if err := writeCredentials(dataDir, creds); err != nil {
		return Credentials{}, err
	}
	if err := storeOwner(cat, creds); err != nil {
		return Credentials{}, err
	}
	return creds, nil
}

func newCredentials(fromEnv *Credentials) (Credentials, error) {
	if fromEnv != nil {
		creds := *fromEnv
		creds.PrincipalID = uuid.NewString()
		return creds, nil
	}
	accessKey, err := NewAccessKey()
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{
		AccessKey:      accessKey,
		SecretKey:      NewSecretKey(),
		OrganizationID: uuid.NewString(),
		ProjectID:      uuid.NewString(),
		PrincipalID:    uuid.NewString(),
	}, nil
}

func storeOwner(cat *catalog.Catalog, creds Credentials) error {
	verifier, err := NewVerifier(creds.SecretKey)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	return cat.Update(func(tx *catalog.Tx) error {
		if err := tx.PutOrganization(catalog.Organization{ID: creds.OrganizationID, Name: "default", CreatedAt: now}); err != nil {
			return err
		}
		if err := tx.PutProject(catalog.Project{ID: creds.ProjectID, OrganizationID: creds.OrganizationID, Name: "default", CreatedAt: now}); err != nil {
			return err
		}
		owner := catalog.Principal{
			ID: creds.PrincipalID, OrganizationID: creds.OrganizationID,
			Kind: catalog.PrincipalUser, Name: "owner", Owner: true, CreatedAt: now,
		}
		if err := tx.PutPrincipal(owner); err != nil {
			return err
		}
		return tx.PutAPIKey(catalog.APIKey{
			AccessKey:        creds.AccessKey,
			PrincipalID:      creds.PrincipalID,
			OrganizationID:   creds.OrganizationID,
			DefaultProjectID: creds.ProjectID,
			Description:      "owner key created at first start",
			TokenHash:        TokenHash(creds.SecretKey),
			Verifier:         verifier,
			CreatedAt:        now,
		})
	})
}

// checkKnownKey accepts environment credentials on a later start only when
// the catalog holds that access key with that secret, so a stale shell
// environment fails loudly instead of being half applied.
func checkKnownKey(cat *catalog.Catalog, creds Credentials) error {
	var key catalog.APIKey
	err := cat.View(func(tx *catalog.Tx) error {
		var err error
		key, err = tx.APIKey(creds.AccessKey)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return fmt.Errorf("%s=%s is not a key of this data directory, which was set up with other credentials: unset the SCW_ variables, run `eval \"$(sdblocal env)\"`, or use another --data-dir", EnvAccessKey, creds.AccessKey)
	}
	if err != nil {
		return err
	}
	if !tokenHashEqual(key.TokenHash, TokenHash(creds.SecretKey)) {
		return fmt.Errorf("%s does not match the secret key stored for %s=%s in this data directory", EnvSecretKey, EnvAccessKey, creds.AccessKey)
	}
	return nil
}

func writeCredentials(dataDir string, creds Credentials) error {
	raw, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, CredentialsFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}

// ReadCredentials reads the owner's credentials from the data directory.
func ReadCredentials(dataDir string) (Credentials, error) {
	path := filepath.Join(dataDir, CredentialsFileName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Credentials{}, fmt.Errorf("read %s: no credentials: start `sdblocal serve --data-dir %s` once to create them", path, dataDir)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	var creds Credentials
	if err := json.Unmarshal(raw, &creds); err != nil {
		return Credentials{}, fmt.Errorf("read %s: %w", path, err)
	}
	return creds, nil
}
