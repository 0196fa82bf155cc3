package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

func TestAuthorizeOrganization(t *testing.T) {
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthenticator(cat)
	org := creds.OrganizationID

	// memberWith stores an application holding the rule and returns it.
	memberWith := func(rule catalog.Rule) catalog.Principal {
		t.Helper()
		p := catalog.Principal{ID: NewSecretKey(), OrganizationID: org, Kind: catalog.PrincipalApplication}
		err := cat.Update(func(tx *catalog.Tx) error {
			if err := tx.PutPrincipal(p); err != nil {
				return err
			}
			return tx.PutPolicy(catalog.Policy{ID: NewSecretKey(), OrganizationID: org, PrincipalID: p.ID, Rules: []catalog.Rule{rule}})
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	allActions := []OrganizationAction{ActionIAMRead, ActionIAMManage, ActionProjectRead, ActionProjectManage}
	tests := []struct {
		name    string
		rule    catalog.Rule
		allowed []OrganizationAction
	}{
		{"organization manager", catalog.Rule{PermissionSetNames: []string{string(OrganizationManager)}, OrganizationID: org}, allActions},
		{"IAM manager", catalog.Rule{PermissionSetNames: []string{string(IAMManager)}, OrganizationID: org}, allActions},
		{"IAM read-only", catalog.Rule{PermissionSetNames: []string{string(IAMReadOnly)}, OrganizationID: org}, []OrganizationAction{ActionIAMRead}},
		{"project manager", catalog.Rule{PermissionSetNames: []string{string(ProjectManager)}, OrganizationID: org}, []OrganizationAction{ActionProjectRead, ActionProjectManage}},
		{"project read-only", catalog.Rule{PermissionSetNames: []string{string(ProjectReadOnly)}, OrganizationID: org}, []OrganizationAction{ActionProjectRead}},
		{"database full access", catalog.Rule{PermissionSetNames: []string{string(FullAccess)}, OrganizationID: org}, nil},
		// An organization-scoped set in a project rule grants nothing.
		{"IAM manager on a project", catalog.Rule{PermissionSetNames: []string{string(IAMManager)}, ProjectIDs: []string{creds.ProjectID}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			member := memberWith(tt.rule)
			for _, action := range allActions {
				want := false
				for _, allowed := range tt.allowed {
					want = want || allowed == action
				}
				got, err := a.AuthorizeOrganization(member, org, action)
				if err != nil || got != want {
					t.Errorf("%s: %v, %v; want %v", action, got, err, want)
				}
			}
			if ok, _ := a.AuthorizeOrganization(member, NewSecretKey(), ActionIAMRead); ok {
				t.Error("authorized in another organization")
			}
		})
	}

	owner := catalog.Principal{ID: creds.PrincipalID, OrganizationID: org, Owner: true}
	for _, action := range allActions {
		if ok, _ := a.AuthorizeOrganization(owner, org, action); !ok {
			t.Errorf("owner denied %s", action)
		}
	}
	if ok, _ := a.AuthorizeOrganization(owner, NewSecretKey(), ActionIAMManage); ok {
		t.Error("owner authorized in another organization")
	}
}

func TestValidPermissionSet(t *testing.T) {
	for _, name := range []string{"ServerlessSQLDatabaseReadOnly", "ServerlessSQLDatabaseDataReadWrite", "IAMManager", "ProjectReadOnly"} {
		if !ValidPermissionSet(name) {
			t.Errorf("ValidPermissionSet(%q) = false", name)
		}
	}
	for _, name := range []string{"", "AllProductsFullAccess", "iammanager"} {
		if ValidPermissionSet(name) {
			t.Errorf("ValidPermissionSet(%q) = true", name)
		}
	}
	if FullAccess.OrganizationScoped() || !IAMReadOnly.OrganizationScoped() {
		t.Error("OrganizationScoped: FullAccess must be project-scoped and IAMReadOnly organization-scoped")
	}
}

func TestAuthenticatorClock(t *testing.T) {
	cat, dir := openCatalog(t)
	creds, err := Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiresAt := time.Now().Add(time.Hour)
	err = cat.Update(func(tx *catalog.Tx) error {
		key, err := tx.APIKey(creds.AccessKey)
		if err != nil {
			return err
		}
		key.ExpiresAt = &expiresAt
		return tx.UpdateAPIKey(key)
	})
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	a := NewAuthenticatorWithClock(cat, func() time.Time { return now })
	if _, err := a.AuthenticateToken(creds.SecretKey); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	now = expiresAt
	if _, err := a.AuthenticateToken(creds.SecretKey); !errors.Is(err, ErrExpiredKey) {
		t.Errorf("at expiry: %v, want ErrExpiredKey", err)
	}
}
