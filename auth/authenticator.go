package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

// Identity is who an API request or a wire connection acts as.
type Identity struct {
	Principal catalog.Principal
	// AccessKey is the key the caller presented, for logs and audit; it is
	// not a secret.
	AccessKey string
}

// Authenticator checks secret keys against the catalog.
type Authenticator struct {
	cat *catalog.Catalog
	now func() time.Time
}

// NewAuthenticator returns an Authenticator reading keys from cat.
func NewAuthenticator(cat *catalog.Catalog) *Authenticator {
	return &Authenticator{cat: cat, now: time.Now}
}

// AuthenticateToken resolves an X-Auth-Token value (a secret key) to the
// identity of its key. It returns ErrInvalidCredentials for a token that
// matches no key, and ErrExpiredKey for an expired key.
func (a *Authenticator) AuthenticateToken(token string) (Identity, error) {
	if !ValidSecretKey(token) {
		return Identity{}, ErrInvalidCredentials
	}
	hash := TokenHash(token)
	var id Identity
	err := a.cat.View(func(tx *catalog.Tx) error {
		key, err := tx.APIKeyByTokenHash(hash)
		if errors.Is(err, catalog.ErrNotFound) {
			return ErrInvalidCredentials
		}
		if err != nil {
			return err
		}
		// The index lookup already matched; comparing again in constant
		// time guards against a corrupted index pointing at another key.
		if !tokenHashEqual(key.TokenHash, hash) {
			return ErrInvalidCredentials
		}
		if key.Expired(a.now()) {
			return ErrExpiredKey
		}
		principal, err := tx.Principal(key.PrincipalID)
		if errors.Is(err, catalog.ErrNotFound) {
			return ErrInvalidCredentials
		}
		if err != nil {
			return err
		}
		id = Identity{Principal: principal, AccessKey: key.AccessKey}
		return nil
	})
	return id, err
}

// ErrExpiredKey is returned for a key past its expiry date.
var ErrExpiredKey = errors.New("api key expired")

// AuthenticatePassword checks a wire login: principalID as the user name and
// a secret key as the password. Every failure is ErrInvalidCredentials, and
// an unknown principal costs the same key derivation as a known one.
func (a *Authenticator) AuthenticatePassword(principalID, password string) (Identity, error) {
	var principal catalog.Principal
	var keys []catalog.APIKey
	err := a.cat.View(func(tx *catalog.Tx) error {
		p, err := tx.Principal(principalID)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		principal = p
		keys, err = tx.APIKeysOfPrincipal(principalID)
		return err
	})
	if err != nil {
		return Identity{}, fmt.Errorf("look up principal %s: %w", principalID, err)
	}
	if len(keys) == 0 {
		CheckSecret(dummyVerifier, password)
		return Identity{}, ErrInvalidCredentials
	}

	now := a.now()
	for _, key := range keys {
		if key.Expired(now) {
			continue
		}
		// The token hash identifies the key cheaply, and the verifier then
		// confirms it, so a login costs one key derivation however many
		// keys the principal holds.
		if !tokenHashEqual(key.TokenHash, TokenHash(password)) {
			continue
		}
		if CheckSecret(key.Verifier, password) {
			return Identity{Principal: principal, AccessKey: key.AccessKey}, nil
		}
	}
	CheckSecret(dummyVerifier, password)
	return Identity{}, ErrInvalidCredentials
}

// NewAuthenticatorWithClock returns an Authenticator that reads the time
// from now when it checks key expiry, so tests and simulations can move
// time forward without waiting.
func NewAuthenticatorWithClock(cat *catalog.Catalog, now func() time.Time) *Authenticator {
	return &Authenticator{cat: cat, now: now}
}

// Now returns the current time on the Authenticator's clock, the time
// against which key expiry is checked.
func (a *Authenticator) Now() time.Time { return a.now() }
