package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/catalog"
)

// SCRAM-SHA-256 logins on the PostgreSQL wire (RFC 5802, RFC 7677).
//
// The server sends the salt and iteration count before the client proves
// that it holds a secret, so it must pick a verifier before it can know
// which of the principal's API keys the client uses. sdblocal therefore
// gives every key of one principal the same salt and iteration count
// (NewPrincipalVerifier). The client's proof is then checked against the
// StoredKey of each key in turn, which costs one HMAC and one hash per key
// and no key derivation. Secret keys are random UUIDs, so sharing a salt
// between the keys of one principal weakens none of them.
//
// Keys made with NewVerifier carry a salt of their own. When a principal's
// keys do not all share one salt, the exchange uses the salt of the newest
// key that has not expired, and keys with another salt cannot log in with
// SCRAM (Skipped counts them).

// ErrSCRAMMalformed is returned for a SCRAM message that does not follow
// RFC 5802. The error text never contains the message.
var ErrSCRAMMalformed = errors.New("malformed SCRAM message")

// ErrSCRAMChannelBinding is returned when the channel-binding data in the
// client-final message differs from the server's.
var ErrSCRAMChannelBinding = errors.New("SCRAM channel binding check failed")

// scramSaltLength is the length of mock salts, PostgreSQL's
// SCRAM_DEFAULT_SALT_LEN and the length NewVerifier draws.
const scramSaltLength = saltLength

// NewPrincipalVerifier derives the SCRAM-SHA-256 verifier of a new secret
// key for a principal whose current keys are existing. It reuses the salt
// and iteration count that a SCRAM login would send for existing, so that
// the new key and the old ones can all log in. Without usable keys it
// draws a fresh salt, as NewVerifier does.
func NewPrincipalVerifier(secret string, existing []catalog.APIKey, now time.Time) (catalog.SCRAMVerifier, error) {
	group, _ := scramKeyGroup(existing, now)
	if len(group) == 0 {
		return NewVerifier(secret)
	}
	v := group[0].Verifier
	return deriveVerifier(secret, v.Salt, v.Iterations)
}

// scramKeyGroup returns the keys a SCRAM login checks a proof against: the
// unexpired keys with a usable verifier that share the salt and iteration
// count of the newest such key. skipped counts the unexpired keys left out
// because their salt or iteration count differs.
func scramKeyGroup(keys []catalog.APIKey, now time.Time) (group []catalog.APIKey, skipped int) {
	var usable []catalog.APIKey
	newest := -1
	for _, key := range keys {
		if key.Expired(now) || key.Verifier.Iterations <= 0 || len(key.Verifier.Salt) == 0 ||
			len(key.Verifier.StoredKey) == 0 || len(key.Verifier.ServerKey) == 0 {
			continue
		}
		usable = append(usable, key)
		if newest < 0 || key.CreatedAt.After(usable[newest].CreatedAt) {
			newest = len(usable) - 1
		}
	}
	if newest < 0 {
		return nil, 0
	}
	chosen := usable[newest].Verifier
	for _, key := range usable {
		if bytes.Equal(key.Verifier.Salt, chosen.Salt) && key.Verifier.Iterations == chosen.Iterations {
			group = append(group, key)
		} else {
			skipped++
		}
	}
	return group, skipped
}

// SCRAMExchange is the server side of one SCRAM-SHA-256 login, from the
// client-first message to the server-final message. It runs one
// xdg-go/scram conversation per candidate key. All of them send the same
// server-first message, because the keys share a salt and the
// conversations share a server nonce, and the final step accepts the
// proof if any of them does.
//
// An unknown principal, or one without a usable key, gets one conversation
// with a mock verifier. Its salt is derived from the user name and a
// server secret, as PostgreSQL's scram_mock_salt does, and its keys are
// random. The exchange therefore looks the same on the wire and always
// fails.
type SCRAMExchange struct {
	principal     catalog.Principal
	keys          []catalog.APIKey // candidate keys, empty for a mock exchange
	conversations []*scram.ServerConversation
	skipped       int
	finished      bool
}

// NewSCRAMExchange prepares a login for the principal named by user.
// binding is the tls-server-end-point binding of the client's connection
// when the server offered SCRAM-SHA-256-PLUS, and the zero value otherwise.
// mockSecret seeds the mock salt. It should stay the same across restarts,
// so that the salt sent for an unknown user name does not change.
func (a *Authenticator) NewSCRAMExchange(user string, binding scram.ChannelBinding, mockSecret []byte) (*SCRAMExchange, error) {
	var principal catalog.Principal
	var keys []catalog.APIKey
	err := a.cat.View(func(tx *catalog.Tx) error {
		p, err := tx.Principal(user)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		principal = p
		keys, err = tx.APIKeysOfPrincipal(user)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("look up principal %s: %w", user, err)
	}

	group, skipped := scramKeyGroup(keys, a.now())
	nonce, err := serverNonce()
	if err != nil {
		return nil, err
	}
	ex := &SCRAMExchange{principal: principal, keys: group, skipped: skipped}
	if len(group) == 0 {
		creds, err := mockCredentials(user, mockSecret)
		if err != nil {
			return nil, err
		}
		conv, err := newConversation(creds, nonce, binding)
		if err != nil {
			return nil, err
		}
		ex.conversations = []*scram.ServerConversation{conv}
		return ex, nil
	}
	for _, key := range group {
		creds := scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(key.Verifier.Salt), Iters: key.Verifier.Iterations},
			StoredKey:  key.Verifier.StoredKey,
			ServerKey:  key.Verifier.ServerKey,
		}
		conv, err := newConversation(creds, nonce, binding)
		if err != nil {
			return nil, err
		}
		ex.conversations = append(ex.conversations, conv)
	}
	return ex, nil
}

// Skipped returns how many unexpired keys of the principal cannot log in
// with this exchange because their salt differs from the one it sends.
func (e *SCRAMExchange) Skipped() int { return e.skipped }

// ServerFirst takes the client-first message and returns the server-first
// message. The user name inside the client-first message is ignored, as
// PostgreSQL ignores it: the startup packet names the user. It returns
// ErrSCRAMMalformed for a message that does not parse.
func (e *SCRAMExchange) ServerFirst(clientFirst string) (string, error) {
	var first string
	for i, conv := range e.conversations {
		reply, err := conv.Step(clientFirst)
		if err != nil {
			return "", ErrSCRAMMalformed
		}
		if i == 0 {
			first = reply
		} else if reply != first {
			// Every candidate shares the salt, iteration count and nonce,
			// so a difference is a bug in the grouping.
			return "", errors.New("SCRAM conversations of one principal disagree on the server-first message")
		}
	}
	return first, nil
}

// ServerFinal takes the client-final message. When the proof matches one
// of the candidate keys, it returns the server-final message and the
// identity of that key. The server-final message proves to the client
// that the server holds the verifier too. A wrong proof returns
// ErrInvalidCredentials, a channel binding that differs from the server's
// returns ErrSCRAMChannelBinding, and any other protocol error returns
// ErrSCRAMMalformed.
func (e *SCRAMExchange) ServerFinal(clientFinal string) (string, Identity, error) {
	if e.finished {
		return "", Identity{}, errors.New("SCRAM exchange already finished")
	}
	e.finished = true

	// Every conversation is stepped, even after a match, so the time
	// taken does not depend on which key the client holds.
	var reply, failure string
	var matched *catalog.APIKey
	for i, conv := range e.conversations {
		out, err := conv.Step(clientFinal)
		if err == nil && conv.Valid() && matched == nil && i < len(e.keys) {
			reply, matched = out, &e.keys[i]
		}
		if err != nil && i == 0 {
			failure = out
		}
	}
	if matched != nil {
		return reply, Identity{Principal: e.principal, AccessKey: matched.AccessKey}, nil
	}
	switch failure {
	case scram.ErrInvalidProof:
		return "", Identity{}, ErrInvalidCredentials
	case scram.ErrChannelBindingsDontMatch:
		return "", Identity{}, ErrSCRAMChannelBinding
	}
	return "", Identity{}, ErrSCRAMMalformed
}

// newConversation returns a server conversation over creds that sends
// nonce as its half of the nonce.
func newConversation(creds scram.StoredCredentials, nonce string, binding scram.ChannelBinding) (*scram.ServerConversation, error) {
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return nil, fmt.Errorf("prepare SCRAM server: %w", err)
	}
	server.WithNonceGenerator(func() string { return nonce })
	return server.NewConversationWithChannelBinding(binding), nil
}

// serverNonce returns the server's half of the nonce: 18 random bytes in
// base64, as PostgreSQL's SCRAM_RAW_NONCE_LEN.
func serverNonce() (string, error) {
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate SCRAM nonce: %w", err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// mockCredentials returns a verifier that no secret matches, with a salt
// that depends only on user and secret.
func mockCredentials(user string, secret []byte) (scram.StoredCredentials, error) {
	sum := sha256.Sum256(append([]byte(user), secret...))
	keys := make([]byte, 2*sha256.Size)
	if _, err := rand.Read(keys); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("generate mock SCRAM keys: %w", err)
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(sum[:scramSaltLength]), Iters: SCRAMIterations},
		StoredKey:  keys[:sha256.Size],
		ServerKey:  keys[sha256.Size:],
	}, nil
}
