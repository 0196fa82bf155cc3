package api

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// apiKeyJSON is the APIKey object of iam/v1alpha1. SecretKey is set only
// in the response to the create call, and is null everywhere else, as on
// the real API, because only a verifier and a hash of it are stored.
type apiKeyJSON struct {
	AccessKey        string  `json:"access_key"`
	SecretKey        *string `json:"secret_key"`
	ApplicationID    *string `json:"application_id,omitempty"`
	UserID           *string `json:"user_id,omitempty"`
	Description      string  `json:"description"`
	CreatedAt        string  `json:"created_at"`
	UpdatedAt        string  `json:"updated_at"`
	ExpiresAt        *string `json:"expires_at"`
	DefaultProjectID string  `json:"default_project_id"`
	Editable         bool    `json:"editable"`
	Deletable        bool    `json:"deletable"`
	Managed          bool    `json:"managed"`
	CreationIP       string  `json:"creation_ip"`
}

type listAPIKeysResponse struct {
	APIKeys    []apiKeyJSON `json:"api_keys"`
	TotalCount uint32       `json:"total_count"`
}

// API key list orderings, the values of ListAPIKeysRequestOrderBy in the
// SDK. The first is the default.
var apiKeyOrders = []string{
	"created_at_asc", "created_at_desc", "updated_at_asc", "updated_at_desc",
	"expires_at_asc", "expires_at_desc", "access_key_asc", "access_key_desc",
}

// Bearer types, the values of BearerType in the SDK besides
// unknown_bearer_type.
const (
	bearerUser        = "user"
	bearerApplication = "application"
)

// createAPIKeyRequest is the body of POST /api-keys. ExpiresAt is decoded
// as a string so a malformed date is reported on its own field.
type createAPIKeyRequest struct {
	ApplicationID    *string `json:"application_id"`
	UserID           *string `json:"user_id"`
	ExpiresAt        *string `json:"expires_at"`
	DefaultProjectID *string `json:"default_project_id"`
	Description      string  `json:"description"`
}

// updateAPIKeyRequest changes only the fields present.
type updateAPIKeyRequest struct {
	DefaultProjectID *string `json:"default_project_id"`
	Description      *string `json:"description"`
	ExpiresAt        *string `json:"expires_at"`
}

func toAPIKeyJSON(k catalog.APIKey, bearer catalog.PrincipalKind) apiKeyJSON {
	out := apiKeyJSON{
		AccessKey:        k.AccessKey,
		Description:      k.Description,
		CreatedAt:        formatTime(k.CreatedAt),
		UpdatedAt:        formatTime(updatedAt(k.CreatedAt, k.UpdatedAt)),
		ExpiresAt:        formatTimePtr(k.ExpiresAt),
		DefaultProjectID: k.DefaultProjectID,
		Editable:         true,
		Deletable:        true,
		CreationIP:       k.CreationIP,
	}
	principalID := k.PrincipalID
	if bearer == catalog.PrincipalApplication {
		out.ApplicationID = &principalID
	} else {
		out.UserID = &principalID
	}
	return out
}

// createAPIKey handles POST /api-keys. The key is bound to an application
// or a user of the caller's organization.
func (s *server) createAPIKey(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createAPIKeyRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	bearerField, bearerID := bearerOf(req, &invalid)
	invalid.check(validateDescription("description", req.Description))
	expiresAt := s.parseExpiry(req.ExpiresAt, &invalid)
	defaultProjectID := ""
	if req.DefaultProjectID != nil && *req.DefaultProjectID != "" {
		if auth.ValidUUID(*req.DefaultProjectID) {
			defaultProjectID = strings.ToLower(*req.DefaultProjectID)
		} else {
			invalid.check(argumentError{"default_project_id", reasonFormat, fmt.Sprintf("default_project_id %q is not a UUID", *req.DefaultProjectID)}, false)
		}
	}
	if err := invalid.err(); err != nil {
		return nil, err
	}

	var bearer catalog.Principal
	var err error
	if bearerField == "application_id" {
		bearer, err = s.findApplication(bearerID)
	} else {
		bearer, err = s.findPrincipal(bearerID, "user_id", catalog.PrincipalUser, resourceUser)
	}
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, bearer.OrganizationID, auth.ActionIAMManage, permissionAPIKey, actionCreate); err != nil {
		return nil, err
	}
	if err := checkOwnerKey(call, bearer, actionCreate); err != nil {
		return nil, err
	}

	secret := auth.NewSecretKey()
	key := catalog.APIKey{
		PrincipalID:    bearer.ID,
		OrganizationID: bearer.OrganizationID,
		Description:    req.Description,
		TokenHash:      auth.TokenHash(secret),
		CreatedAt:      recordTime(),
		ExpiresAt:      expiresAt,
		CreationIP:     clientIP(r),
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		projectID, err := defaultProject(tx, bearer.OrganizationID, defaultProjectID)
		if err != nil {
			return err
		}
		key.DefaultProjectID = projectID
		// A SCRAM login sends one salt before the client proves which key
		// it holds, so every key of a principal shares its salt and
		// iteration count. Reading the existing keys in this transaction
		// keeps two concurrent creations from choosing different salts.
		existing, err := tx.APIKeysOfPrincipal(bearer.ID)
		if err != nil {
			return err
		}
		if key.Verifier, err = auth.NewPrincipalVerifier(secret, existing, s.authn.Now()); err != nil {
			return err
		}
		// A new access key matches a stored one with a chance of about
		// 36^-17 per key, and drawing again keeps that from failing.
		for range 3 {
			if key.AccessKey, err = auth.NewAccessKey(); err != nil {
				return err
			}
			if err = tx.PutAPIKey(key); !errors.Is(err, catalog.ErrExists) {
				return err
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}

	s.log.Info("api key created", "access_key", key.AccessKey, "bearer_id", bearer.ID, "principal_id", call.principal().ID)
	out := toAPIKeyJSON(key, bearer.Kind)
	out.SecretKey = &secret
	return out, nil
}

// bearerOf returns which of application_id and user_id the request sets and
// its value, and records an error unless exactly one is set.
func bearerOf(req createAPIKeyRequest, invalid *argumentErrors) (field, id string) {
	application := req.ApplicationID != nil && *req.ApplicationID != ""
	user := req.UserID != nil && *req.UserID != ""
	switch {
	case application && user:
		invalid.check(argumentError{"user_id", reasonConstraint, "set only one of application_id and user_id"}, false)
	case application:
		return "application_id", *req.ApplicationID
	case user:
		return "user_id", *req.UserID
	default:
		invalid.check(argumentError{"application_id", reasonRequired, "set application_id or user_id to the principal that will bear the key"}, false)
	}
	return "", ""
}

// parseExpiry checks an expires_at value, which must be an RFC 3339 time in
// the future on the authenticator's clock. It returns nil for a key that
// never expires.
func (s *server) parseExpiry(raw *string, invalid *argumentErrors) *time.Time {
	if raw == nil || *raw == "" {
		return nil
	}
	expiresAt, err := time.Parse(time.RFC3339Nano, *raw)
	if err != nil {
		invalid.check(argumentError{"expires_at", reasonFormat, fmt.Sprintf("expires_at %q is not an RFC 3339 date and time", *raw)}, false)
		return nil
	}
	if !expiresAt.After(s.authn.Now()) {
		invalid.check(argumentError{"expires_at", reasonConstraint, fmt.Sprintf("expires_at %s is not in the future: omit it for a key that never expires", *raw)}, false)
		return nil
	}
	expiresAt = expiresAt.UTC().Truncate(time.Microsecond)
	return &expiresAt
}

// defaultProject returns the project a key defaults to: the requested one,
// which must belong to the organization, or else the organization's oldest
// project, the one created at first start.
func defaultProject(tx *catalog.Tx, organizationID, requested string) (string, error) {
	if requested != "" {
		project, err := tx.Project(requested)
		if errors.Is(err, catalog.ErrNotFound) || (err == nil && project.OrganizationID != organizationID) {
			return "", invalidArgument("default_project_id", reasonConstraint,
				fmt.Sprintf("project %s is not a project of organization %s", requested, organizationID))
		}
		return requested, err
	}
	projects, err := tx.Projects(organizationID)
	if err != nil {
		return "", err
	}
	if len(projects) == 0 {
		return "", invalidArgument("default_project_id", reasonRequired,
			fmt.Sprintf("organization %s has no project: create one and set default_project_id to it", organizationID))
	}
	oldest := slices.MinFunc(projects, func(a, b catalog.Project) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return oldest.ID, nil
}

// checkOwnerKey keeps the owner's API keys under the owner's control alone,
// so a principal granted IAMManager cannot mint or revoke the owner's
// credentials.
func checkOwnerKey(call *apiCall, bearer catalog.Principal, deniedAction string) error {
	if bearer.Owner && !call.principal().Owner {
		return permissionsDeniedOn(permissionAPIKey, deniedAction)
	}
	return nil
}

// clientIP returns the address the request came from, without the port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// getAPIKey handles GET /api-keys/{access_key}.
func (s *server) getAPIKey(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	key, bearer, err := s.findAPIKey(r.PathValue("access_key"))
	if err != nil {
		return nil, err
	}
	// Any caller may read the key it authenticated with, so a tool holding
	// only a key can find the principal ID it logs in with on the wire.
	if key.AccessKey != call.identity.AccessKey {
		if err := s.authorizeOrganization(call, key.OrganizationID, auth.ActionIAMRead, permissionAPIKey, actionRead); err != nil {
			return nil, err
		}
	}
	return toAPIKeyJSON(key, bearer.Kind), nil
}

// updateAPIKey handles PATCH /api-keys/{access_key}. The secret key never
// changes.
func (s *server) updateAPIKey(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req updateAPIKeyRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	key, bearer, err := s.findAPIKey(r.PathValue("access_key"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, key.OrganizationID, auth.ActionIAMManage, permissionAPIKey, actionWrite); err != nil {
		return nil, err
	}
	if err := checkOwnerKey(call, bearer, actionWrite); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	if req.Description != nil {
		invalid.check(validateDescription("description", *req.Description))
	}
	expiresAt := s.parseExpiry(req.ExpiresAt, &invalid)
	if req.DefaultProjectID != nil && !auth.ValidUUID(*req.DefaultProjectID) {
		invalid.check(argumentError{"default_project_id", reasonFormat, fmt.Sprintf("default_project_id %q is not a UUID", *req.DefaultProjectID)}, false)
	}
	if err := invalid.err(); err != nil {
		return nil, err
	}

	var updated catalog.APIKey
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.APIKey(key.AccessKey)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceAPIKey, key.AccessKey)
		}
		if err != nil {
			return err
		}
		if req.Description != nil {
			current.Description = *req.Description
		}
		if expiresAt != nil {
			current.ExpiresAt = expiresAt
		}
		if req.DefaultProjectID != nil {
			current.DefaultProjectID, err = defaultProject(tx, current.OrganizationID, strings.ToLower(*req.DefaultProjectID))
			if err != nil {
				return err
			}
		}
		current.UpdatedAt = recordTime()
		updated = current
		return tx.UpdateAPIKey(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("api key updated", "access_key", key.AccessKey, "principal_id", call.principal().ID)
	return toAPIKeyJSON(updated, bearer.Kind), nil
}

// deleteAPIKey handles DELETE /api-keys/{access_key}. The owner's last key
// cannot be deleted: it is the only credential into this sdblocal, which
// has no console to make a new one.
func (s *server) deleteAPIKey(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	key, bearer, err := s.findAPIKey(r.PathValue("access_key"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, key.OrganizationID, auth.ActionIAMManage, permissionAPIKey, actionDelete); err != nil {
		return nil, err
	}
	if err := checkOwnerKey(call, bearer, actionDelete); err != nil {
		return nil, err
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		if bearer.Owner {
			keys, err := tx.APIKeysOfPrincipal(bearer.ID)
			if err != nil {
				return err
			}
			if len(keys) <= 1 {
				return preconditionFailed(preconditionResourceStillInUse,
					fmt.Sprintf("%s is the owner's last API key: create another key for user %s before deleting it", key.AccessKey, bearer.ID))
			}
		}
		err := tx.DeleteAPIKey(key.AccessKey)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceAPIKey, key.AccessKey)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("api key deleted", "access_key", key.AccessKey, "bearer_id", bearer.ID, "principal_id", call.principal().ID)
	return noContent{}, nil
}

// findAPIKey checks an access key and reads the key and its bearer.
func (s *server) findAPIKey(accessKey string) (catalog.APIKey, catalog.Principal, error) {
	if !auth.ValidAccessKey(accessKey) {
		return catalog.APIKey{}, catalog.Principal{}, invalidArgument("access_key", reasonFormat,
			fmt.Sprintf("access_key %q is not an access key: expected SCW followed by 17 upper-case letters or digits", accessKey))
	}
	var key catalog.APIKey
	var bearer catalog.Principal
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		if key, err = tx.APIKey(accessKey); err != nil {
			return err
		}
		bearer, err = tx.Principal(key.PrincipalID)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.APIKey{}, catalog.Principal{}, notFound(resourceAPIKey, accessKey)
	}
	return key, bearer, err
}

// listAPIKeys handles GET /api-keys. The SDK always sends bearer_type,
// unknown_bearer_type when the caller set none.
func (s *server) listAPIKeys(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(apiKeyOrders)
	editable := p.boolean("editable")
	expired := p.boolean("expired")
	bearerID := p.uuid("bearer_id")
	bearerType := p.enum("bearer_type", "unknown_bearer_type", []string{bearerUser, bearerApplication})
	applicationID := p.uuid("application_id")
	userID := p.uuid("user_id")
	var accessKeys []string
	for _, name := range []string{"access_key", "access_keys"} {
		for _, raw := range values[name] {
			if raw != "" {
				accessKeys = append(accessKeys, raw)
			}
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionAPIKey, actionList)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMRead, permissionAPIKey, actionList); err != nil {
		return nil, err
	}

	description := values.Get("description")
	clock := s.authn.Now()
	var keys []catalog.APIKey
	kinds := map[string]catalog.PrincipalKind{}
	err = s.cat.View(func(tx *catalog.Tx) error {
		principals, err := tx.Principals(func(p *catalog.Principal) bool { return p.OrganizationID == organizationID })
		if err != nil {
			return err
		}
		for _, p := range principals {
			kinds[p.ID] = p.Kind
		}
		keys, err = tx.APIKeys(func(k *catalog.APIKey) bool {
			kind := kinds[k.PrincipalID]
			return k.OrganizationID == organizationID &&
				(editable == nil || *editable) &&
				(expired == nil || k.Expired(clock) == *expired) &&
				(len(accessKeys) == 0 || slices.Contains(accessKeys, k.AccessKey)) &&
				strings.Contains(k.Description, description) &&
				(bearerID == "" || k.PrincipalID == bearerID) &&
				(bearerType == "" || string(kind) == bearerType) &&
				(applicationID == "" || (k.PrincipalID == applicationID && kind == catalog.PrincipalApplication)) &&
				(userID == "" || (k.PrincipalID == userID && kind == catalog.PrincipalUser))
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	sortAPIKeys(keys, paging.orderBy)

	resp := listAPIKeysResponse{APIKeys: []apiKeyJSON{}, TotalCount: clampUint32(len(keys))}
	for _, key := range paginate(keys, paging) {
		resp.APIKeys = append(resp.APIKeys, toAPIKeyJSON(key, kinds[key.PrincipalID]))
	}
	return resp, nil
}

// sortAPIKeys orders keys, which the catalog returns oldest first. A key
// that never expires sorts after every expiring key in expires_at_asc.
func sortAPIKeys(keys []catalog.APIKey, orderBy string) {
	var key func(a, b catalog.APIKey) int
	switch {
	case strings.HasPrefix(orderBy, "created_at"):
		key = func(a, b catalog.APIKey) int { return a.CreatedAt.Compare(b.CreatedAt) }
	case strings.HasPrefix(orderBy, "updated_at"):
		key = func(a, b catalog.APIKey) int {
			return updatedAt(a.CreatedAt, a.UpdatedAt).Compare(updatedAt(b.CreatedAt, b.UpdatedAt))
		}
	case strings.HasPrefix(orderBy, "expires_at"):
		key = func(a, b catalog.APIKey) int {
			switch {
			case a.ExpiresAt == nil && b.ExpiresAt == nil:
				return 0
			case a.ExpiresAt == nil:
				return 1
			case b.ExpiresAt == nil:
				return -1
			}
			return a.ExpiresAt.Compare(*b.ExpiresAt)
		}
	case strings.HasPrefix(orderBy, "access_key"):
		key = func(a, b catalog.APIKey) int { return cmp.Compare(a.AccessKey, b.AccessKey) }
	default:
		key = func(a, b catalog.APIKey) int { return 0 }
	}
	slices.SortStableFunc(keys, func(a, b catalog.APIKey) int { return ascending(orderBy, key(a, b)) })
}
