package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	iam "github.com/scaleway/scaleway-sdk-go/api/iam/v1alpha1"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

var accessKeyPattern = regexp.MustCompile(`^SCW[A-Z0-9]{17}$`)

// ownerIAM returns the SDK's IAM API acting as the organization owner.
func (e *testEnv) ownerIAM() *iam.API { return iam.NewAPI(e.ownerClient()) }

// newApplication creates an application with a key and a policy made of
// rules, through the IAM API as the owner, and returns the application
// and the key with its secret.
func (e *testEnv) newApplication(name string, rules ...*iam.RuleSpecs) (*iam.Application, *iam.APIKey) {
	e.t.Helper()
	api := e.ownerIAM()
	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	key, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{ApplicationID: &app.ID, Description: name + " key"})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(rules) > 0 {
		_, err := api.CreatePolicy(&iam.CreatePolicyRequest{Name: name + "-policy", ApplicationID: &app.ID, Rules: rules})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return app, key
}

func projectRule(projectID string, sets ...string) *iam.RuleSpecs {
	return &iam.RuleSpecs{PermissionSetNames: &sets, ProjectIDs: &[]string{projectID}}
}

func organizationRule(organizationID string, sets ...string) *iam.RuleSpecs {
	return &iam.RuleSpecs{PermissionSetNames: &sets, OrganizationID: &organizationID}
}

func TestIAMApplicationKeyPolicyFlow(t *testing.T) {
	env := newTestEnv(t)
	api := env.ownerIAM()
	db := env.createDatabase("shared")

	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: "backend", Description: "the web backend", Tags: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	if app.OrganizationID != env.creds.OrganizationID || app.Name != "backend" || app.NbAPIKeys != 0 || !app.Editable || !app.Deletable {
		t.Errorf("created application = %+v", app)
	}

	key, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{ApplicationID: &app.ID, Description: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !accessKeyPattern.MatchString(key.AccessKey) {
		t.Errorf("access key %q does not match SCW and 17 upper-case letters or digits", key.AccessKey)
	}
	if key.SecretKey == nil || !auth.ValidUUID(*key.SecretKey) {
		t.Fatalf("create response secret_key = %v, want a UUID", key.SecretKey)
	}
	if key.ApplicationID == nil || *key.ApplicationID != app.ID || key.UserID != nil {
		t.Errorf("bearer = application %v, user %v; want application %s", key.ApplicationID, key.UserID, app.ID)
	}
	if key.DefaultProjectID != env.creds.ProjectID || key.ExpiresAt != nil || key.CreationIP != "127.0.0.1" {
		t.Errorf("default project, expires_at, creation_ip = %s, %v, %s; want %s, nil, 127.0.0.1", key.DefaultProjectID, key.ExpiresAt, key.CreationIP, env.creds.ProjectID)
	}

	t.Run("secret is returned only at creation", func(t *testing.T) {
		got, err := api.GetAPIKey(&iam.GetAPIKeyRequest{AccessKey: key.AccessKey})
		if err != nil {
			t.Fatal(err)
		}
		if got.SecretKey != nil {
			t.Errorf("GetAPIKey secret_key = %q, want null", *got.SecretKey)
		}
		list, err := api.ListAPIKeys(&iam.ListAPIKeysRequest{BearerID: &app.ID}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if list.TotalCount != 1 || list.APIKeys[0].AccessKey != key.AccessKey || list.APIKeys[0].SecretKey != nil {
			t.Errorf("ListAPIKeys(bearer) = %+v, want the key without its secret", list)
		}
	})

	t.Run("catalog stores no secret", func(t *testing.T) {
		err := env.cat.View(func(tx *catalog.Tx) error {
			stored, err := tx.APIKey(key.AccessKey)
			if err != nil {
				return err
			}
			raw, err := json.Marshal(stored)
			if strings.Contains(string(raw), *key.SecretKey) {
				t.Errorf("stored key %s contains the secret", raw)
			}
			if !auth.CheckSecret(stored.Verifier, *key.SecretKey) {
				t.Error("stored verifier does not accept the secret")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	newKey := env.sdkClient(key.AccessKey, *key.SecretKey, env.creds.ProjectID)
	t.Run("key without policy reads nothing", func(t *testing.T) {
		_, err := newKey.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
		requireDenied(t, err, "read")
	})

	policy, err := api.CreatePolicy(&iam.CreatePolicyRequest{
		Name:          "backend-reads",
		ApplicationID: &app.ID,
		Rules:         []*iam.RuleSpecs{projectRule(env.creds.ProjectID, "ServerlessSQLDatabaseReadOnly", "ServerlessSQLDatabaseDataReadWrite")},
		Tags:          []string{"web"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if policy.ApplicationID == nil || *policy.ApplicationID != app.ID || policy.NbRules != 1 || policy.NbPermissionSets != 2 || policy.NbScopes != 1 {
		t.Errorf("created policy = %+v, want application %s with 1 rule, 2 sets, 1 scope", policy, app.ID)
	}

	t.Run("policy grants reads", func(t *testing.T) {
		got, err := newKey.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
		if err != nil || got.ID != db.ID {
			t.Errorf("GetDatabase with the new key = %v, %v", got, err)
		}
	})

	t.Run("lists and filters", func(t *testing.T) {
		apps, err := api.ListApplications(&iam.ListApplicationsRequest{Tag: scw.StringPtr("we")}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if apps.TotalCount != 1 || apps.Applications[0].ID != app.ID || apps.Applications[0].NbAPIKeys != 1 {
			t.Errorf("ListApplications(tag) = %+v, want the application with 1 key", apps)
		}
		policies, err := api.ListPolicies(&iam.ListPoliciesRequest{ApplicationIDs: []string{app.ID}}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if policies.TotalCount != 1 || policies.Policies[0].ID != policy.ID {
			t.Errorf("ListPolicies(application) = %+v, want the policy", policies)
		}
		none, err := api.ListPolicies(&iam.ListPoliciesRequest{NoPrincipal: scw.BoolPtr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if none.TotalCount != 0 {
			t.Errorf("ListPolicies(no_principal) = %+v, want none", none)
		}
		rules, err := api.ListRules(&iam.ListRulesRequest{PolicyID: policy.ID}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if rules.TotalCount != 1 || rules.Rules[0].ProjectIDs == nil || !slices.Equal(*rules.Rules[0].ProjectIDs, []string{env.creds.ProjectID}) ||
			rules.Rules[0].PermissionSetsScopeType != iam.PermissionSetScopeTypeProjects || rules.Rules[0].ID == "" {
			t.Errorf("ListRules = %+v, want one projects rule on %s", rules.Rules, env.creds.ProjectID)
		}
	})

	t.Run("set rules replaces them", func(t *testing.T) {
		resp, err := api.SetRules(&iam.SetRulesRequest{PolicyID: policy.ID, Rules: []*iam.RuleSpecs{organizationRule(env.creds.OrganizationID, "ServerlessSQLDatabaseFullAccess")}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Rules) != 1 || resp.Rules[0].OrganizationID == nil || *resp.Rules[0].OrganizationID != env.creds.OrganizationID {
			t.Errorf("SetRules = %+v, want one organization rule", resp.Rules)
		}
		if _, err := newKey.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "by-app", CPUMax: 1}); err != nil {
			t.Errorf("create with FullAccess on the organization: %v", err)
		}
	})

	t.Run("update application and policy", func(t *testing.T) {
		renamed, err := api.UpdateApplication(&iam.UpdateApplicationRequest{ApplicationID: app.ID, Name: scw.StringPtr("backend-v2")})
		if err != nil {
			t.Fatal(err)
		}
		if renamed.Name != "backend-v2" || renamed.Description != "the web backend" || !renamed.UpdatedAt.After(*renamed.CreatedAt) {
			t.Errorf("UpdateApplication = %+v, want the new name, the old description and a later updated_at", renamed)
		}
		detached, err := api.UpdatePolicy(&iam.UpdatePolicyRequest{PolicyID: policy.ID, NoPrincipal: scw.BoolPtr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if detached.NoPrincipal == nil || !*detached.NoPrincipal || detached.ApplicationID != nil {
			t.Errorf("UpdatePolicy(no_principal) = %+v", detached)
		}
		_, err = newKey.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
		requireDenied(t, err, "read")
		if _, err := api.UpdatePolicy(&iam.UpdatePolicyRequest{PolicyID: policy.ID, ApplicationID: &app.ID}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("delete application cascades", func(t *testing.T) {
		if err := api.DeleteApplication(&iam.DeleteApplicationRequest{ApplicationID: app.ID}); err != nil {
			t.Fatal(err)
		}
		_, err := api.GetApplication(&iam.GetApplicationRequest{ApplicationID: app.ID})
		requireNotFound(t, err, "application", app.ID)
		_, err = api.GetAPIKey(&iam.GetAPIKeyRequest{AccessKey: key.AccessKey})
		requireNotFound(t, err, "api_key", key.AccessKey)
		_, err = api.GetPolicy(&iam.GetPolicyRequest{PolicyID: policy.ID})
		requireNotFound(t, err, "policy", policy.ID)

		_, err = newKey.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
		var denied *scw.DeniedAuthenticationError
		if !errors.As(err, &denied) || denied.Reason != "not_found" {
			t.Errorf("call with a deleted key: %T %v, want denied_authentication not_found", err, err)
		}
	})
}

func TestIAMUsersAndOwnerKeys(t *testing.T) {
	env := newTestEnv(t)
	api := env.ownerIAM()

	users, err := api.ListUsers(&iam.ListUsersRequest{}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if users.TotalCount != 1 || users.Users[0].ID != env.creds.PrincipalID || users.Users[0].Type != iam.UserTypeOwner {
		t.Fatalf("ListUsers = %+v, want the owner alone", users)
	}
	members, err := api.ListUsers(&iam.ListUsersRequest{Type: iam.UserTypeMember})
	if err != nil {
		t.Fatal(err)
	}
	if members.TotalCount != 0 {
		t.Errorf("ListUsers(member) = %+v, want none", members)
	}
	owner, err := api.GetUser(&iam.GetUserRequest{UserID: env.creds.PrincipalID})
	if err != nil {
		t.Fatal(err)
	}
	if owner.OrganizationID != env.creds.OrganizationID || owner.Deletable {
		t.Errorf("GetUser = %+v, want the owner of the organization, not deletable", owner)
	}

	// The owner's bootstrap key is its only key and cannot be deleted.
	err = api.DeleteAPIKey(&iam.DeleteAPIKeyRequest{AccessKey: env.creds.AccessKey})
	var failed *scw.PreconditionFailedError
	if !errors.As(err, &failed) || failed.Precondition != "resource_still_in_use" {
		t.Fatalf("delete the owner's last key: %T %v, want precondition_failed resource_still_in_use", err, err)
	}

	second, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{UserID: &env.creds.PrincipalID, Description: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if second.UserID == nil || *second.UserID != env.creds.PrincipalID {
		t.Errorf("bearer = %v, want user %s", second.UserID, env.creds.PrincipalID)
	}
	ownerKeys, err := api.ListAPIKeys(&iam.ListAPIKeysRequest{BearerType: iam.BearerTypeUser, OrderBy: iam.ListAPIKeysRequestOrderByCreatedAtDesc}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if ownerKeys.TotalCount != 2 || ownerKeys.APIKeys[0].AccessKey != second.AccessKey {
		t.Errorf("ListAPIKeys(user, created_at_desc) = %+v, want 2 keys, newest first", ownerKeys)
	}

	// With a second key the first may go, and the second keeps working.
	if err := api.DeleteAPIKey(&iam.DeleteAPIKeyRequest{AccessKey: env.creds.AccessKey}); err != nil {
		t.Fatal(err)
	}
	withSecond := iam.NewAPI(env.scwClient(second.AccessKey, *second.SecretKey, env.creds.ProjectID, env.creds.OrganizationID))
	if _, err := withSecond.GetUser(&iam.GetUserRequest{UserID: env.creds.PrincipalID}); err != nil {
		t.Errorf("owner's second key: %v", err)
	}
}

func TestIAMNonOwnerRights(t *testing.T) {
	env := newTestEnv(t)
	org := env.creds.OrganizationID
	_, readerKey := env.newApplication("reader", projectRule(env.creds.ProjectID, "ServerlessSQLDatabaseReadOnly"))
	_, auditorKey := env.newApplication("auditor", organizationRule(org, "IAMReadOnly"))
	_, managerKey := env.newApplication("manager", organizationRule(org, "IAMManager"))
	clientOf := func(key *iam.APIKey) *iam.API {
		return iam.NewAPI(env.scwClient(key.AccessKey, *key.SecretKey, env.creds.ProjectID, org))
	}
	reader, auditor, manager := clientOf(readerKey), clientOf(auditorKey), clientOf(managerKey)

	t.Run("database rights give no IAM rights", func(t *testing.T) {
		_, err := reader.ListApplications(&iam.ListApplicationsRequest{})
		requireDeniedOn(t, err, "iam_application", "list")
		_, err = reader.CreateApplication(&iam.CreateApplicationRequest{Name: "sneaky"})
		requireDeniedOn(t, err, "iam_application", "create")
	})
	t.Run("IAMReadOnly lists but cannot write", func(t *testing.T) {
		apps, err := auditor.ListApplications(&iam.ListApplicationsRequest{}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if apps.TotalCount != 3 {
			t.Errorf("applications = %d, want 3", apps.TotalCount)
		}
		if _, err := auditor.ListAPIKeys(&iam.ListAPIKeysRequest{}); err != nil {
			t.Errorf("ListAPIKeys: %v", err)
		}
		_, err = auditor.CreatePolicy(&iam.CreatePolicyRequest{Name: "p", NoPrincipal: scw.BoolPtr(true)})
		requireDeniedOn(t, err, "iam_policy", "create")
	})
	t.Run("IAMManager manages applications", func(t *testing.T) {
		app, err := manager.CreateApplication(&iam.CreateApplicationRequest{Name: "made-by-manager"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := manager.CreateAPIKey(&iam.CreateAPIKeyRequest{ApplicationID: &app.ID}); err != nil {
			t.Errorf("CreateAPIKey for an application: %v", err)
		}
	})
	t.Run("IAMManager cannot touch the owner's keys", func(t *testing.T) {
		_, err := manager.CreateAPIKey(&iam.CreateAPIKeyRequest{UserID: &env.creds.PrincipalID})
		requireDeniedOn(t, err, "iam_api_key", "create")
		err = manager.DeleteAPIKey(&iam.DeleteAPIKeyRequest{AccessKey: env.creds.AccessKey})
		requireDeniedOn(t, err, "iam_api_key", "delete")
	})
	t.Run("another organization is denied", func(t *testing.T) {
		otherOrganization, _ := env.addOrganization()
		_, err := manager.ListApplications(&iam.ListApplicationsRequest{OrganizationID: otherOrganization})
		requireDeniedOn(t, err, "iam_application", "list")
	})
}

func TestIAMPolicyValidation(t *testing.T) {
	env := newTestEnv(t)
	api := env.ownerIAM()
	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: "target"})
	if err != nil {
		t.Fatal(err)
	}
	org := env.creds.OrganizationID
	unknownProject := uuid.NewString()
	tests := []struct {
		name     string
		req      iam.CreatePolicyRequest
		argument string
		reason   string
	}{
		{"unknown permission set", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{projectRule(env.creds.ProjectID, "AllProductsFullAccess")}}, "rules.0.permission_set_names", "constraint"},
		{"no permission set", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{projectRule(env.creds.ProjectID)}}, "rules.0.permission_set_names", "required"},
		{"organization set on projects", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{projectRule(env.creds.ProjectID, "IAMManager")}}, "rules.0.project_ids", "constraint"},
		{"mixed scopes", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{organizationRule(org, "IAMManager", "ServerlessSQLDatabaseReadOnly")}}, "rules.0.permission_set_names", "constraint"},
		{"condition", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{{PermissionSetNames: &[]string{"ServerlessSQLDatabaseReadOnly"}, OrganizationID: &org, Condition: "request.ip == '10.0.0.1'"}}}, "rules.0.condition", "constraint"},
		{"no scope", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{{PermissionSetNames: &[]string{"ServerlessSQLDatabaseReadOnly"}}}}, "rules.0.project_ids", "required"},
		{"both scopes", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{{PermissionSetNames: &[]string{"ServerlessSQLDatabaseReadOnly"}, OrganizationID: &org, ProjectIDs: &[]string{env.creds.ProjectID}}}}, "rules.0.organization_id", "constraint"},
		{"unknown project", iam.CreatePolicyRequest{ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{projectRule(unknownProject, "ServerlessSQLDatabaseReadOnly")}}, "rules.0.project_ids", "constraint"},
		{"no principal", iam.CreatePolicyRequest{}, "application_id", "required"},
		{"group", iam.CreatePolicyRequest{GroupID: scw.StringPtr(uuid.NewString())}, "group_id", "constraint"},
		{"two principals", iam.CreatePolicyRequest{ApplicationID: &app.ID, UserID: &env.creds.PrincipalID}, "application_id", "constraint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			_, err := api.CreatePolicy(&req)
			detail := requireArgumentError(t, err)
			if detail.ArgumentName != tt.argument || detail.Reason != tt.reason {
				t.Errorf("detail = %+v, want argument %q reason %q", detail, tt.argument, tt.reason)
			}
			if detail.HelpMessage == "" {
				t.Errorf("detail %+v has no help message", detail)
			}
		})
	}

	t.Run("unknown application", func(t *testing.T) {
		id := uuid.NewString()
		_, err := api.CreatePolicy(&iam.CreatePolicyRequest{ApplicationID: &id})
		requireNotFound(t, err, "application", id)
	})
	policies, err := api.ListPolicies(&iam.ListPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if policies.TotalCount != 0 {
		t.Errorf("policies after invalid requests = %d, want 0", policies.TotalCount)
	}
}

func TestIAMAPIKeyValidation(t *testing.T) {
	env := newTestEnv(t)
	api := env.ownerIAM()
	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: "keys"})
	if err != nil {
		t.Fatal(err)
	}
	past := env.clock.now().Add(-time.Minute)
	tests := []struct {
		name     string
		req      iam.CreateAPIKeyRequest
		argument string
		reason   string
	}{
		{"no bearer", iam.CreateAPIKeyRequest{}, "application_id", "required"},
		{"two bearers", iam.CreateAPIKeyRequest{ApplicationID: &app.ID, UserID: &env.creds.PrincipalID}, "user_id", "constraint"},
		{"expiry in the past", iam.CreateAPIKeyRequest{ApplicationID: &app.ID, ExpiresAt: &past}, "expires_at", "constraint"},
		{"description too long", iam.CreateAPIKeyRequest{ApplicationID: &app.ID, Description: strings.Repeat("d", 201)}, "description", "constraint"},
		{"default project unknown", iam.CreateAPIKeyRequest{ApplicationID: &app.ID, DefaultProjectID: scw.StringPtr(uuid.NewString())}, "default_project_id", "constraint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			_, err := api.CreateAPIKey(&req)
			detail := requireArgumentError(t, err)
			if detail.ArgumentName != tt.argument || detail.Reason != tt.reason {
				t.Errorf("detail = %+v, want argument %q reason %q", detail, tt.argument, tt.reason)
			}
		})
	}

	t.Run("malformed expiry", func(t *testing.T) {
		resp := env.ownerDo(http.MethodPost, "/iam/v1alpha1/api-keys", `{"application_id":"`+app.ID+`","expires_at":"tomorrow"}`)
		requireRawArgumentError(t, resp, "expires_at", "format")
	})
	t.Run("user key for an application ID", func(t *testing.T) {
		_, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{UserID: &app.ID})
		requireNotFound(t, err, "user", app.ID)
	})
	t.Run("malformed access key", func(t *testing.T) {
		_, err := api.GetAPIKey(&iam.GetAPIKeyRequest{AccessKey: "scw-lowercase"})
		detail := requireArgumentError(t, err)
		if detail.ArgumentName != "access_key" || detail.Reason != "format" {
			t.Errorf("detail = %+v, want access_key format", detail)
		}
	})
}

func TestAPIKeyExpiry(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("expiry")
	api := env.ownerIAM()
	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: "short-lived"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreatePolicy(&iam.CreatePolicyRequest{Name: "read", ApplicationID: &app.ID, Rules: []*iam.RuleSpecs{projectRule(env.creds.ProjectID, "ServerlessSQLDatabaseReadOnly")}}); err != nil {
		t.Fatal(err)
	}
	expiresAt := env.clock.now().Add(time.Hour)
	key, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{ApplicationID: &app.ID, ExpiresAt: &expiresAt})
	if err != nil {
		t.Fatal(err)
	}
	if key.ExpiresAt == nil || !key.ExpiresAt.Equal(expiresAt.Truncate(time.Microsecond)) {
		t.Errorf("expires_at = %v, want %v", key.ExpiresAt, expiresAt)
	}
	client := env.sdkClient(key.AccessKey, *key.SecretKey, env.creds.ProjectID)
	if _, err := client.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID}); err != nil {
		t.Fatalf("before expiry: %v", err)
	}

	env.clock.advance(time.Hour)
	_, err = client.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
	var denied *scw.DeniedAuthenticationError
	if !errors.As(err, &denied) || denied.Reason != "expired" {
		t.Fatalf("at expiry: %T %v, want denied_authentication expired", err, err)
	}

	expired, err := api.ListAPIKeys(&iam.ListAPIKeysRequest{Expired: scw.BoolPtr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if expired.TotalCount != 1 || expired.APIKeys[0].AccessKey != key.AccessKey {
		t.Errorf("ListAPIKeys(expired) = %+v, want the expired key alone", expired)
	}
}

func TestIAMDeleteResponses(t *testing.T) {
	env := newTestEnv(t)
	app, key := env.newApplication("raw", projectRule(env.creds.ProjectID, "ServerlessSQLDatabaseReadOnly"))
	policies, err := env.ownerIAM().ListPolicies(&iam.ListPoliciesRequest{ApplicationIDs: []string{app.ID}})
	if err != nil || len(policies.Policies) != 1 {
		t.Fatalf("ListPolicies = %v, %v", policies, err)
	}

	for _, path := range []string{
		"/iam/v1alpha1/policies/" + policies.Policies[0].ID,
		"/iam/v1alpha1/api-keys/" + key.AccessKey,
		"/iam/v1alpha1/applications/" + app.ID,
	} {
		resp := env.ownerDo(http.MethodDelete, path, "")
		if resp.status != http.StatusNoContent || len(resp.body) != 0 || resp.header.Get("Content-Type") != "application/json" {
			t.Errorf("DELETE %s = %d %q Content-Type %q, want 204 with no body and application/json", path, resp.status, resp.body, resp.header.Get("Content-Type"))
		}
		again := env.ownerDo(http.MethodDelete, path, "")
		if again.status != http.StatusNotFound || again.decode(t)["type"] != "not_found" {
			t.Errorf("second DELETE %s = %d %s, want 404 not_found", path, again.status, again.body)
		}
	}
}

func TestListPermissionSets(t *testing.T) {
	env := newTestEnv(t)
	resp, err := env.ownerIAM().ListPermissionSets(&iam.ListPermissionSetsRequest{}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	scopes := map[string]iam.PermissionSetScopeType{}
	for _, set := range resp.PermissionSets {
		names = append(names, set.Name)
		scopes[set.Name] = set.ScopeType
	}
	if !slices.IsSorted(names) || len(names) != 9 || resp.TotalCount != 9 {
		t.Errorf("permission sets = %v (total %d), want 9 sorted by name", names, resp.TotalCount)
	}
	if scopes["ServerlessSQLDatabaseReadOnly"] != iam.PermissionSetScopeTypeProjects || scopes["IAMManager"] != iam.PermissionSetScopeTypeOrganization {
		t.Errorf("scopes = %v, want projects for database sets and organization for IAMManager", scopes)
	}
}

func TestListAPIKeysQueryValidation(t *testing.T) {
	env := newTestEnv(t)
	tests := []struct {
		query    string
		argument string
		reason   string
	}{
		{"?order_by=name_asc", "order_by", "constraint"},
		{"?bearer_type=group", "bearer_type", "constraint"},
		{"?expired=maybe", "expired", "format"},
		{"?bearer_id=someone", "bearer_id", "format"},
		{"?page_size=500", "page_size", "constraint"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			requireRawArgumentError(t, env.ownerDo(http.MethodGet, "/iam/v1alpha1/api-keys"+tt.query, ""), tt.argument, tt.reason)
		})
	}
}

// requireDeniedOn asserts a permissions_denied error naming the action on
// the resource.
func requireDeniedOn(t *testing.T, err error, resource, action string) {
	t.Helper()
	var denied *scw.PermissionsDeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("error = %T %v, want *scw.PermissionsDeniedError", err, err)
	}
	if len(denied.Details) != 1 || denied.Details[0].Resource != resource || denied.Details[0].Action != action {
		t.Errorf("details = %+v, want one for action %q on %s", denied.Details, action, resource)
	}
}

// TestIAMRawShapes compares the JSON keys of IAM and Account objects with
// those api.scaleway.com sends, as recorded in the Terraform provider's
// test cassettes, so clients that read raw JSON see the same fields. The
// project's status is not in those recordings, but SDK v1.39.0 reads it and
// its project waiter polls it.
func TestIAMRawShapes(t *testing.T) {
	env := newTestEnv(t)
	app, key := env.newApplication("shapes", projectRule(env.creds.ProjectID, "ServerlessSQLDatabaseReadOnly"))
	policies, err := env.ownerIAM().ListPolicies(&iam.ListPoliciesRequest{ApplicationIDs: []string{app.ID}})
	if err != nil || len(policies.Policies) != 1 {
		t.Fatalf("ListPolicies = %v, %v", policies, err)
	}

	tests := []struct {
		path string
		keys []string
	}{
		{"/iam/v1alpha1/applications/" + app.ID, []string{"created_at", "deletable", "description", "editable", "id", "managed", "name", "nb_api_keys", "organization_id", "tags", "updated_at"}},
		{"/iam/v1alpha1/api-keys/" + key.AccessKey, []string{"access_key", "application_id", "created_at", "creation_ip", "default_project_id", "deletable", "description", "editable", "expires_at", "managed", "secret_key", "updated_at"}},
		{"/iam/v1alpha1/policies/" + policies.Policies[0].ID, []string{"application_id", "created_at", "deletable", "description", "editable", "id", "managed", "name", "nb_permission_sets", "nb_rules", "nb_scopes", "organization_id", "tags", "updated_at"}},
		{"/account/v3/projects/" + env.creds.ProjectID, []string{"created_at", "description", "id", "name", "organization_id", "qualification", "status", "updated_at"}},
	}
	for _, tt := range tests {
		resp := env.ownerDo(http.MethodGet, tt.path, "")
		if resp.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", tt.path, resp.status, resp.body)
		}
		body := resp.decode(t)
		var keys []string
		for k := range body {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tt.keys) {
			t.Errorf("GET %s keys = %v, want %v", tt.path, keys, tt.keys)
		}
		if secret, ok := body["secret_key"]; ok && secret != nil {
			t.Errorf("GET %s secret_key = %v, want null", tt.path, secret)
		}
	}
}
