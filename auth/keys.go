// Package auth holds sdblocal's IAM model: principals, API keys, policies
// and permission sets, and the checks of secret keys presented on the HTTP
// API (X-Auth-Token) and on the PostgreSQL wire (password).
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"

	"github.com/google/uuid"
	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/catalog"
)

// SCRAMIterations is the PBKDF2 iteration count of new verifiers, the
// PostgreSQL default (scram_iterations = 4096).
const SCRAMIterations = 4096

const saltLength = 16

// accessKeyAlphabet and accessKeyPattern follow the format the Scaleway SDK
// enforces: "SCW" and 17 upper-case letters or digits.
const accessKeyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

var accessKeyPattern = regexp.MustCompile(`^SCW[A-Z0-9]{17}$`)

// ValidAccessKey reports whether s has the form of a Scaleway access key.
func ValidAccessKey(s string) bool { return accessKeyPattern.MatchString(s) }

// ValidSecretKey reports whether s has the form of a Scaleway secret key: a
// UUID in its canonical lower- or upper-case text form.
func ValidSecretKey(s string) bool { return ValidUUID(s) }

// ValidUUID reports whether s is a UUID in the 36-character text form.
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// NewAccessKey returns a random access key.
func NewAccessKey() (string, error) {
	out := []byte("SCW")
	buf := make([]byte, 1)
	for len(out) < 20 {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate access key: %w", err)
		}
		// Bytes at or above 252, the largest multiple of 36 that fits in
		// a byte, are drawn again so every character is equally likely.
		if buf[0] >= 252 {
			continue
		}
		out = append(out, accessKeyAlphabet[int(buf[0])%len(accessKeyAlphabet)])
	}
	return string(out), nil
}

// NewSecretKey returns a random secret key: a version 4 UUID, 122 random bits.
func NewSecretKey() string { return uuid.NewString() }

// TokenHash returns the look-up hash of a secret key. A plain SHA-256 is
// enough here because secret keys are random UUIDs, not chosen passwords.
func TokenHash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// NewVerifier derives the SCRAM-SHA-256 verifier of secret with a fresh salt.
func NewVerifier(secret string) (catalog.SCRAMVerifier, error) {
	salt := make([]byte, saltLength)
	if _, err := rand.Read(salt); err != nil {
		return catalog.SCRAMVerifier{}, fmt.Errorf("generate salt: %w", err)
	}
	return deriveVerifier(secret, salt, SCRAMIterations)
}

func deriveVerifier(secret string, salt []byte, iterations int) (catalog.SCRAMVerifier, error) {
	client, err := scram.SHA256.NewClient("", secret, "")
	if err != nil {
		return catalog.SCRAMVerifier{}, fmt.Errorf("prepare secret key: %w", err)
	}
	creds, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return catalog.SCRAMVerifier{}, fmt.Errorf("derive verifier: %w", err)
	}
	return catalog.SCRAMVerifier{
		Salt:       salt,
		Iterations: iterations,
		StoredKey:  creds.StoredKey,
		ServerKey:  creds.ServerKey,
	}, nil
}

// CheckSecret reports whether password is the secret key behind v. The
// comparison runs in constant time.
func CheckSecret(v catalog.SCRAMVerifier, password string) bool {
	if v.Iterations <= 0 || len(v.Salt) == 0 {
		return false
	}
	got, err := deriveVerifier(password, v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got.StoredKey, v.StoredKey) == 1
}

// dummyVerifier is checked against when the principal is unknown, so that a
// failed login costs the same time whether or not the user name exists.
var dummyVerifier = func() catalog.SCRAMVerifier {
	v, err := NewVerifier(NewSecretKey())
	if err != nil {
		panic(err)
	}
	return v
}()

// tokenHashEqual compares two token hashes in constant time.
func tokenHashEqual(a, b []byte) bool { return hmac.Equal(a, b) }

// ErrInvalidCredentials is returned for an unknown principal, an unknown or
// expired key or a wrong secret; callers must not tell these apart to a
// client.
var ErrInvalidCredentials = errors.New("invalid credentials")
