package catalog

import (
	"cmp"
	"slices"
	"time"
)

// byCreation orders records oldest first, ties broken by key, so every list
// the API pages through has a stable order.
func byCreation[T any](records []T, createdAt func(*T) time.Time, key func(*T) string) {
	slices.SortFunc(records, func(a, b T) int {
		if c := createdAt(&a).Compare(createdAt(&b)); c != 0 {
			return c
		}
		return cmp.Compare(key(&a), key(&b))
	})
}

// Principals returns the principals that keep accepts (all when keep is
// nil), oldest first.
func (t *Tx) Principals(keep func(*Principal) bool) ([]Principal, error) {
	out, err := list(t.tx, bucketPrincipals, keep)
	if err != nil {
		return nil, err
	}
	byCreation(out, func(p *Principal) time.Time { return p.CreatedAt }, func(p *Principal) string { return p.ID })
	return out, nil
}

// DeletePrincipal removes the principal with the given ID together with its
// API keys and the policies attached to it, so no key or policy outlives its
// principal. It returns ErrNotFound when the principal does not exist.
func (t *Tx) DeletePrincipal(id string) error {
	if t.tx.Bucket(bucketPrincipals).Get([]byte(id)) == nil {
		return ErrNotFound
	}
	keys, err := t.APIKeysOfPrincipal(id)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := t.DeleteAPIKey(key.AccessKey); err != nil {
			return err
		}
	}
	policies, err := t.PoliciesOfPrincipal(id)
	if err != nil {
		return err
	}
	for _, policy := range policies {
		if err := t.DeletePolicy(policy.ID); err != nil {
			return err
		}
	}
	return t.tx.Bucket(bucketPrincipals).Delete([]byte(id))
}

// UpdateAPIKey replaces the stored key that has k's access key. The token
// hash and verifier of the stored key are kept, because a secret key never
// changes after creation. It returns ErrNotFound when no such key exists.
func (t *Tx) UpdateAPIKey(k APIKey) error {
	stored, err := t.APIKey(k.AccessKey)
	if err != nil {
		return err
	}
	k.TokenHash = stored.TokenHash
	k.Verifier = stored.Verifier
	return put(t.tx, bucketAPIKeys, k.AccessKey, k)
}

// APIKeys returns the API keys that keep accepts (all when keep is nil),
// oldest first.
func (t *Tx) APIKeys(keep func(*APIKey) bool) ([]APIKey, error) {
	out, err := list(t.tx, bucketAPIKeys, keep)
	if err != nil {
		return nil, err
	}
	byCreation(out, func(k *APIKey) time.Time { return k.CreatedAt }, func(k *APIKey) string { return k.AccessKey })
	return out, nil
}

// Policy returns the policy with the given ID.
func (t *Tx) Policy(id string) (Policy, error) {
	var p Policy
	return p, get(t.tx, bucketPolicies, id, &p)
}

// Policies returns the policies that keep accepts (all when keep is nil),
// oldest first.
func (t *Tx) Policies(keep func(*Policy) bool) ([]Policy, error) {
	out, err := list(t.tx, bucketPolicies, keep)
	if err != nil {
		return nil, err
	}
	byCreation(out, func(p *Policy) time.Time { return p.CreatedAt }, func(p *Policy) string { return p.ID })
	return out, nil
}

// DeletePolicy removes the policy with the given ID. It returns ErrNotFound
// when the policy does not exist.
func (t *Tx) DeletePolicy(id string) error {
	if t.tx.Bucket(bucketPolicies).Get([]byte(id)) == nil {
		return ErrNotFound
	}
	return t.tx.Bucket(bucketPolicies).Delete([]byte(id))
}
