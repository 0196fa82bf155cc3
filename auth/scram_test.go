package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/catalog"
)

// scramKeyring is a catalog with the owner from Bootstrap and helpers to
// give the owner more keys.
type scramKeyring struct {
	t     *testing.T
	cat   *catalog.Catalog
	authn *Authenticator
	creds Credentials
}

func newSCRAMKeyring(t *testing.T) *scramKeyring {
	t.Helper()
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &scramKeyring{t: t, cat: cat, authn: NewAuthenticator(cat), creds: creds}
}

// addKey stores a new key of the owner created at createdAt, with a
// verifier from NewPrincipalVerifier, or from NewVerifier when ownSalt is
// set. It returns the access key and the secret.
func (k *scramKeyring) addKey(createdAt time.Time, expiresAt *time.Time, ownSalt bool) (string, string) {
	k.t.Helper()
	secret := NewSecretKey()
	accessKey, err := NewAccessKey()
	if err != nil {
		k.t.Fatal(err)
	}
	err = k.cat.Update(func(tx *catalog.Tx) error {
		existing, err := tx.APIKeysOfPrincipal(k.creds.PrincipalID)
		if err != nil {
			return err
		}
		verifier, err := NewPrincipalVerifier(secret, existing, time.Now())
		if ownSalt {
			verifier, err = NewVerifier(secret)
		}
		if err != nil {
			return err
		}
		return tx.PutAPIKey(catalog.APIKey{
			AccessKey: accessKey, PrincipalID: k.creds.PrincipalID, OrganizationID: k.creds.OrganizationID,
			DefaultProjectID: k.creds.ProjectID, TokenHash: TokenHash(secret), Verifier: verifier,
			CreatedAt: createdAt, ExpiresAt: expiresAt,
		})
	})
	if err != nil {
		k.t.Fatal(err)
	}
	return accessKey, secret
}

// scramLogin is the outcome of one SCRAM exchange run by an xdg-go/scram
// client against a SCRAMExchange.
type scramLogin struct {
	identity    Identity
	err         error
	salt        string
	skipped     int
	serverValid bool // the client accepted the server-final message
}

// login runs a full exchange for user with secret. cb, when supported, is
// both the server's binding and the client's.
func (k *scramKeyring) login(user, secret string, cb scram.ChannelBinding, mockSecret []byte) scramLogin {
	k.t.Helper()
	exchange, err := k.authn.NewSCRAMExchange(user, cb, mockSecret)
	if err != nil {
		k.t.Fatalf("NewSCRAMExchange: %v", err)
	}
	client, err := scram.SHA256.NewClient("", secret, "")
	if err != nil {
		k.t.Fatal(err)
	}
	conv := client.NewConversation()
	if cb.IsSupported() {
		conv = client.NewConversationWithChannelBinding(cb)
	}
	clientFirst, err := conv.Step("")
	if err != nil {
		k.t.Fatal(err)
	}

	serverFirst, err := exchange.ServerFirst(clientFirst)
	if err != nil {
		k.t.Fatalf("ServerFirst: %v", err)
	}
	out := scramLogin{salt: scramAttribute(serverFirst, "s"), skipped: exchange.Skipped()}
	clientFinal, err := conv.Step(serverFirst)
	if err != nil {
		k.t.Fatal(err)
	}

	var serverFinal string
	serverFinal, out.identity, out.err = exchange.ServerFinal(clientFinal)
	if out.err == nil {
		_, verr := conv.Step(serverFinal)
		out.serverValid = verr == nil && conv.Valid()
	}
	return out
}

// scramAttribute returns the value of attribute name in a SCRAM message.
func scramAttribute(msg, name string) string {
	for _, field := range strings.Split(msg, ",") {
		if value, ok := strings.CutPrefix(field, name+"="); ok {
			return value
		}
	}
	return ""
}

func TestSCRAMExchangeEveryKey(t *testing.T) {
	k := newSCRAMKeyring(t)
	now := time.Now()
	secondKey, secondSecret := k.addKey(now.Add(time.Second), nil, false)
	thirdKey, thirdSecret := k.addKey(now.Add(2*time.Second), nil, false)

	for _, tc := range []struct{ accessKey, secret string }{
		{k.creds.AccessKey, k.creds.SecretKey},
		{secondKey, secondSecret},
		{thirdKey, thirdSecret},
	} {
		got := k.login(k.creds.PrincipalID, tc.secret, scram.ChannelBinding{}, []byte("mock"))
		if got.err != nil {
			t.Errorf("key %s: %v", tc.accessKey, got.err)
			continue
		}
		if got.identity.AccessKey != tc.accessKey || got.identity.Principal.ID != k.creds.PrincipalID {
			t.Errorf("key %s: identity %+v", tc.accessKey, got.identity)
		}
		if !got.serverValid {
			t.Errorf("key %s: the client rejected the server-final message", tc.accessKey)
		}
		if got.skipped != 0 {
			t.Errorf("key %s: %d keys skipped, want 0", tc.accessKey, got.skipped)
		}
	}

	if got := k.login(k.creds.PrincipalID, NewSecretKey(), scram.ChannelBinding{}, []byte("mock")); !errors.Is(got.err, ErrInvalidCredentials) {
		t.Errorf("wrong secret: error %v, want ErrInvalidCredentials", got.err)
	}
}

func TestSCRAMExchangeChannelBinding(t *testing.T) {
	k := newSCRAMKeyring(t)
	cb := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: bytes.Repeat([]byte{7}, 32)}
	if got := k.login(k.creds.PrincipalID, k.creds.SecretKey, cb, []byte("mock")); got.err != nil || !got.serverValid {
		t.Fatalf("matching binding: error %v, server valid %v", got.err, got.serverValid)
	}

	exchange, err := k.authn.NewSCRAMExchange(k.creds.PrincipalID, cb, []byte("mock"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := scram.SHA256.NewClient("", k.creds.SecretKey, "")
	if err != nil {
		t.Fatal(err)
	}
	other := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: bytes.Repeat([]byte{8}, 32)}
	conv := client.NewConversationWithChannelBinding(other)
	clientFirst, _ := conv.Step("")
	serverFirst, err := exchange.ServerFirst(clientFirst)
	if err != nil {
		t.Fatal(err)
	}
	clientFinal, _ := conv.Step(serverFirst)
	if _, _, err := exchange.ServerFinal(clientFinal); !errors.Is(err, ErrSCRAMChannelBinding) {
		t.Errorf("other certificate's binding: error %v, want ErrSCRAMChannelBinding", err)
	}
}

func TestSCRAMExchangeUnusableKeys(t *testing.T) {
	k := newSCRAMKeyring(t)
	now := time.Now()
	past := now.Add(-time.Minute)
	_, expiredSecret := k.addKey(now.Add(time.Second), &past, false)
	_, ownSaltSecret := k.addKey(now.Add(-time.Hour), nil, true)

	if got := k.login(k.creds.PrincipalID, expiredSecret, scram.ChannelBinding{}, []byte("mock")); !errors.Is(got.err, ErrInvalidCredentials) {
		t.Errorf("expired key: error %v, want ErrInvalidCredentials", got.err)
	}
	// The older key with a salt of its own cannot be checked, because the
	// exchange sends the salt of the owner's newer key.
	got := k.login(k.creds.PrincipalID, ownSaltSecret, scram.ChannelBinding{}, []byte("mock"))
	if !errors.Is(got.err, ErrInvalidCredentials) {
		t.Errorf("key with its own salt: error %v, want ErrInvalidCredentials", got.err)
	}
	if got.skipped != 1 {
		t.Errorf("skipped = %d, want 1", got.skipped)
	}
	if got := k.login(k.creds.PrincipalID, k.creds.SecretKey, scram.ChannelBinding{}, []byte("mock")); got.err != nil {
		t.Errorf("owner key beside unusable keys: %v", got.err)
	}
}

func TestSCRAMExchangeUnknownPrincipal(t *testing.T) {
	k := newSCRAMKeyring(t)
	unknown := NewSecretKey()
	first := k.login(unknown, k.creds.SecretKey, scram.ChannelBinding{}, []byte("mock one"))
	if !errors.Is(first.err, ErrInvalidCredentials) {
		t.Fatalf("unknown principal: error %v, want ErrInvalidCredentials", first.err)
	}
	salt, err := base64.StdEncoding.DecodeString(first.salt)
	if err != nil || len(salt) != saltLength {
		t.Errorf("mock salt %q: %d bytes (%v), want %d like a real one", first.salt, len(salt), err, saltLength)
	}
	if again := k.login(unknown, k.creds.SecretKey, scram.ChannelBinding{}, []byte("mock one")); again.salt != first.salt {
		t.Errorf("mock salt changed between logins: %q then %q", first.salt, again.salt)
	}
	if other := k.login(unknown, k.creds.SecretKey, scram.ChannelBinding{}, []byte("mock two")); other.salt == first.salt {
		t.Error("mock salt does not depend on the server secret")
	}
	if other := k.login(NewSecretKey(), k.creds.SecretKey, scram.ChannelBinding{}, []byte("mock one")); other.salt == first.salt {
		t.Error("mock salt does not depend on the user name")
	}
}

func TestNewPrincipalVerifierSharesSalt(t *testing.T) {
	k := newSCRAMKeyring(t)
	k.addKey(time.Now().Add(time.Second), nil, false)
	var keys []catalog.APIKey
	err := k.cat.View(func(tx *catalog.Tx) error {
		var err error
		keys, err = tx.APIKeysOfPrincipal(k.creds.PrincipalID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("owner has %d keys, want 2", len(keys))
	}
	if !bytes.Equal(keys[0].Verifier.Salt, keys[1].Verifier.Salt) || keys[0].Verifier.Iterations != keys[1].Verifier.Iterations {
		t.Error("keys of one principal have different salts or iteration counts")
	}
	if bytes.Equal(keys[0].Verifier.StoredKey, keys[1].Verifier.StoredKey) {
		t.Error("two secrets gave the same stored key")
	}
	fresh, err := NewPrincipalVerifier(NewSecretKey(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(fresh.Salt, keys[0].Verifier.Salt) {
		t.Error("a principal without keys got the salt of another principal")
	}
}
