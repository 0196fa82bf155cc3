package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// policyJSON is the Policy object of iam/v1alpha1. Exactly one of UserID,
// ApplicationID and NoPrincipal is set. Its rules are read with GET /rules,
// as on the real API.
type policyJSON struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Description      string   `json:"description"`
	OrganizationID   string   `json:"organization_id"`
	CreatedAt        string   `json:"created_at"`
	UpdatedAt        string   `json:"updated_at"`
	Editable         bool     `json:"editable"`
	Deletable        bool     `json:"deletable"`
	Managed          bool     `json:"managed"`
	NbRules          uint32   `json:"nb_rules"`
	NbScopes         uint32   `json:"nb_scopes"`
	NbPermissionSets uint32   `json:"nb_permission_sets"`
	Tags             []string `json:"tags"`
	UserID           *string  `json:"user_id,omitempty"`
	ApplicationID    *string  `json:"application_id,omitempty"`
	NoPrincipal      *bool    `json:"no_principal,omitempty"`
}

type listPoliciesResponse struct {
	Policies   []policyJSON `json:"policies"`
	TotalCount uint32       `json:"total_count"`
}

// ruleJSON is the Rule object of iam/v1alpha1. Exactly one of ProjectIDs
// and OrganizationID is set.
type ruleJSON struct {
	ID                      string    `json:"id"`
	PermissionSetNames      []string  `json:"permission_set_names"`
	PermissionSetsScopeType string    `json:"permission_sets_scope_type"`
	Condition               string    `json:"condition"`
	ProjectIDs              *[]string `json:"project_ids,omitempty"`
	OrganizationID          *string   `json:"organization_id,omitempty"`
}

type listRulesResponse struct {
	Rules      []ruleJSON `json:"rules"`
	TotalCount uint32     `json:"total_count"`
}

type setRulesResponse struct {
	Rules []ruleJSON `json:"rules"`
}

// Policy list orderings, the values of ListPoliciesRequestOrderBy in the
// SDK. The first is the default.
var policyOrders = []string{"policy_name_asc", "policy_name_desc", "created_at_asc", "created_at_desc"}

// Scope types of a permission set, the values of PermissionSetScopeType in
// the SDK that sdblocal uses.
const (
	scopeProjects     = "projects"
	scopeOrganization = "organization"
)

// ruleSpec is one rule of a create or set-rules request.
type ruleSpec struct {
	PermissionSetNames *[]string `json:"permission_set_names"`
	Condition          string    `json:"condition"`
	ProjectIDs         *[]string `json:"project_ids"`
	OrganizationID     *string   `json:"organization_id"`
}

// policyPrincipal is the principal fields of a create or update request, of
// which exactly one must be set.
type policyPrincipal struct {
	UserID        *string `json:"user_id"`
	GroupID       *string `json:"group_id"`
	ApplicationID *string `json:"application_id"`
	NoPrincipal   *bool   `json:"no_principal"`
}

type createPolicyRequest struct {
	Name           string     `json:"name"`
	Description    string     `json:"description"`
	OrganizationID string     `json:"organization_id"`
	Rules          []ruleSpec `json:"rules"`
	Tags           []string   `json:"tags"`
	policyPrincipal
}

// updatePolicyRequest changes only the fields present. Setting any
// principal field replaces the principal.
type updatePolicyRequest struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	Tags        *[]string `json:"tags"`
	policyPrincipal
}

type setRulesRequest struct {
	PolicyID string     `json:"policy_id"`
	Rules    []ruleSpec `json:"rules"`
}

func toPolicyJSON(p catalog.Policy, principalKind catalog.PrincipalKind) policyJSON {
	scopes := map[string]bool{}
	sets := map[string]bool{}
	for _, rule := range p.Rules {
		if rule.OrganizationID != "" {
			scopes["organization/"+rule.OrganizationID] = true
		}
		for _, projectID := range rule.ProjectIDs {
			scopes["project/"+projectID] = true
		}
		for _, name := range rule.PermissionSetNames {
			sets[name] = true
		}
	}
	out := policyJSON{
		ID:               p.ID,
		Name:             p.Name,
		Description:      p.Description,
		OrganizationID:   p.OrganizationID,
		CreatedAt:        formatTime(p.CreatedAt),
		UpdatedAt:        formatTime(updatedAt(p.CreatedAt, p.UpdatedAt)),
		Editable:         true,
		Deletable:        true,
		NbRules:          clampUint32(len(p.Rules)),
		NbScopes:         clampUint32(len(scopes)),
		NbPermissionSets: clampUint32(len(sets)),
		Tags:             orEmpty(p.Tags),
	}
	principalID := p.PrincipalID
	switch {
	case principalID == "":
		out.NoPrincipal = ptr(true)
	case principalKind == catalog.PrincipalApplication:
		out.ApplicationID = &principalID
	default:
		out.UserID = &principalID
	}
	return out
}

func toRuleJSON(rule catalog.Rule) ruleJSON {
	out := ruleJSON{
		ID:                      rule.ID,
		PermissionSetNames:      orEmpty(rule.PermissionSetNames),
		PermissionSetsScopeType: scopeProjects,
	}
	if len(rule.PermissionSetNames) > 0 && auth.PermissionSet(rule.PermissionSetNames[0]).OrganizationScoped() {
		out.PermissionSetsScopeType = scopeOrganization
	}
	if rule.OrganizationID != "" {
		organizationID := rule.OrganizationID
		out.OrganizationID = &organizationID
	} else {
		projectIDs := orEmpty(rule.ProjectIDs)
		out.ProjectIDs = &projectIDs
	}
	return out
}

// parseRules checks the structure of rule specs for a policy of the
// organization and returns them as catalog rules with fresh IDs. The
// projects they name are checked by checkRuleProjects, inside the
// transaction that stores them.
func parseRules(specs []ruleSpec, organizationID string, invalid *argumentErrors) []catalog.Rule {
	var rules []catalog.Rule
	for i, spec := range specs {
		field := func(name string) string { return fmt.Sprintf("rules.%d.%s", i, name) }
		fail := func(name, reason, help string) {
			invalid.check(argumentError{field(name), reason, help}, false)
		}
		rule := catalog.Rule{ID: uuid.NewString()}

		if spec.PermissionSetNames == nil || len(*spec.PermissionSetNames) == 0 {
			fail("permission_set_names", reasonRequired, "set permission_set_names to one or more permission sets, for example ServerlessSQLDatabaseReadOnly")
		}
		organizationScoped := 0
		if spec.PermissionSetNames != nil {
			for _, name := range *spec.PermissionSetNames {
				if !auth.ValidPermissionSet(name) {
					fail("permission_set_names", reasonConstraint, fmt.Sprintf("permission set %q is unknown: use one of %s", name, knownPermissionSetNames()))
					continue
				}
				if auth.PermissionSet(name).OrganizationScoped() {
					organizationScoped++
				}
				if !slices.Contains(rule.PermissionSetNames, name) {
					rule.PermissionSetNames = append(rule.PermissionSetNames, name)
				}
			}
		}
		if organizationScoped > 0 && organizationScoped < len(rule.PermissionSetNames) {
			fail("permission_set_names", reasonConstraint,
				"a rule cannot mix organization-scoped permission sets (IAM and project management) with project-scoped ones: put them in separate rules")
		}

		if spec.Condition != "" {
			fail("condition", reasonConstraint, "rule conditions are not supported by sdblocal: remove condition, or the rule would grant more than intended")
		}

		hasProjects := spec.ProjectIDs != nil && len(*spec.ProjectIDs) > 0
		hasOrganization := spec.OrganizationID != nil && *spec.OrganizationID != ""
		switch {
		case hasProjects && hasOrganization:
			fail("organization_id", reasonConstraint, "set only one of project_ids and organization_id")
		case !hasProjects && !hasOrganization:
			fail("project_ids", reasonRequired, "set project_ids to the projects the rule applies to, or organization_id to apply it to the whole organization")
		case hasOrganization:
			id := strings.ToLower(*spec.OrganizationID)
			if !auth.ValidUUID(id) {
				fail("organization_id", reasonFormat, fmt.Sprintf("organization_id %q is not a UUID", *spec.OrganizationID))
			} else if id != organizationID {
				fail("organization_id", reasonConstraint, fmt.Sprintf("organization_id must be the policy's organization %s, got %s", organizationID, id))
			}
			rule.OrganizationID = id
		default:
			if organizationScoped > 0 {
				fail("project_ids", reasonConstraint, "IAM and project management permission sets apply to the whole organization: set organization_id instead of project_ids")
			}
			for _, raw := range *spec.ProjectIDs {
				if !auth.ValidUUID(raw) {
					fail("project_ids", reasonFormat, fmt.Sprintf("project_ids contains %q, which is not a UUID", raw))
					continue
				}
				if id := strings.ToLower(raw); !slices.Contains(rule.ProjectIDs, id) {
					rule.ProjectIDs = append(rule.ProjectIDs, id)
				}
			}
		}
		rules = append(rules, rule)
	}
	return rules
}

// checkRuleProjects returns invalid_arguments when a rule names a project
// that is not in the organization.
func checkRuleProjects(tx *catalog.Tx, rules []catalog.Rule, organizationID string) error {
	for i, rule := range rules {
		for _, projectID := range rule.ProjectIDs {
			project, err := tx.Project(projectID)
			if errors.Is(err, catalog.ErrNotFound) || (err == nil && project.OrganizationID != organizationID) {
				return invalidArgument(fmt.Sprintf("rules.%d.project_ids", i), reasonConstraint,
					fmt.Sprintf("project %s is not a project of organization %s", projectID, organizationID))
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func knownPermissionSetNames() string {
	var names []string
	for _, set := range append(slices.Clone(auth.KnownPermissionSets), auth.OrganizationPermissionSets...) {
		names = append(names, string(set))
	}
	return strings.Join(names, ", ")
}

// principalOf checks the principal fields of a request. It returns the
// field set and its value, the empty field for no_principal, and records an
// error unless exactly one is set. present is false when none is set.
func principalOf(req policyPrincipal, invalid *argumentErrors) (field, id string, present bool) {
	var set []string
	if req.UserID != nil && *req.UserID != "" {
		set = append(set, "user_id")
		field, id = "user_id", *req.UserID
	}
	if req.ApplicationID != nil && *req.ApplicationID != "" {
		set = append(set, "application_id")
		field, id = "application_id", *req.ApplicationID
	}
	if req.GroupID != nil && *req.GroupID != "" {
		set = append(set, "group_id")
	}
	if req.NoPrincipal != nil && *req.NoPrincipal {
		set = append(set, "no_principal")
		field, id = "", ""
	}
	switch {
	case len(set) == 0:
		return "", "", false
	case len(set) > 1:
		invalid.check(argumentError{set[1], reasonConstraint, fmt.Sprintf("set only one of user_id, application_id and no_principal, got %s", strings.Join(set, " and "))}, false)
	case set[0] == "group_id":
		invalid.check(argumentError{"group_id", reasonConstraint, "groups are not supported by sdblocal: attach the policy to a user_id or an application_id"}, false)
	}
	return field, id, true
}

// resolvePolicyPrincipal reads the principal a policy is attached to, which
// must be in the organization. It returns "" for no principal.
func (s *server) resolvePolicyPrincipal(field, id, organizationID string) (catalog.Principal, error) {
	var principal catalog.Principal
	var err error
	switch field {
	case "":
		return catalog.Principal{}, nil
	case "application_id":
		principal, err = s.findApplication(id)
	default:
		principal, err = s.findPrincipal(id, "user_id", catalog.PrincipalUser, resourceUser)
	}
	if err != nil {
		return catalog.Principal{}, err
	}
	if principal.OrganizationID != organizationID {
		return catalog.Principal{}, invalidArgument(field, reasonConstraint,
			fmt.Sprintf("principal %s is not in the policy's organization %s", principal.ID, organizationID))
	}
	return principal, nil
}

// createPolicy handles POST /policies.
func (s *server) createPolicy(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createPolicyRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", req.OrganizationID, permissionPolicy, actionCreate)
	if err != nil {
		return nil, err
	}
	var invalid argumentErrors
	invalid.check(validateIAMName("name", req.Name))
	invalid.check(validateDescription("description", req.Description))
	invalid.check(validateTags(req.Tags))
	field, principalID, present := principalOf(req.policyPrincipal, &invalid)
	if !present {
		invalid.check(argumentError{"application_id", reasonRequired, "set application_id or user_id to the principal the policy grants rights to, or no_principal to true"}, false)
	}
	rules := parseRules(req.Rules, organizationID, &invalid)
	if err := invalid.err(); err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMManage, permissionPolicy, actionCreate); err != nil {
		return nil, err
	}
	principal, err := s.resolvePolicyPrincipal(field, principalID, organizationID)
	if err != nil {
		return nil, err
	}

	policy := catalog.Policy{
		ID:             uuid.NewString(),
		Name:           req.Name,
		OrganizationID: organizationID,
		PrincipalID:    principal.ID,
		Rules:          rules,
		Description:    req.Description,
		Tags:           req.Tags,
		CreatedAt:      recordTime(),
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		if err := checkRuleProjects(tx, rules, organizationID); err != nil {
			return err
		}
		// The principal may have been deleted since it was looked up,
		// and a policy must not outlive its principal.
		if principal.ID != "" {
			if _, err := tx.Principal(principal.ID); errors.Is(err, catalog.ErrNotFound) {
				return notFound(string(principal.Kind), principal.ID)
			}
		}
		return tx.PutPolicy(policy)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("policy created", "policy_id", policy.ID, "bearer_id", policy.PrincipalID, "principal_id", call.principal().ID)
	return toPolicyJSON(policy, principal.Kind), nil
}

// getPolicy handles GET /policies/{policy_id}.
func (s *server) getPolicy(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	policy, kind, err := s.findPolicy(r.PathValue("policy_id"), "policy_id")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, policy.OrganizationID, auth.ActionIAMRead, permissionPolicy, actionRead); err != nil {
		return nil, err
	}
	return toPolicyJSON(policy, kind), nil
}

// updatePolicy handles PATCH /policies/{policy_id}.
func (s *server) updatePolicy(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req updatePolicyRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	policy, kind, err := s.findPolicy(r.PathValue("policy_id"), "policy_id")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, policy.OrganizationID, auth.ActionIAMManage, permissionPolicy, actionWrite); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	if req.Name != nil {
		invalid.check(validateIAMName("name", *req.Name))
	}
	if req.Description != nil {
		invalid.check(validateDescription("description", *req.Description))
	}
	if req.Tags != nil {
		invalid.check(validateTags(*req.Tags))
	}
	field, principalID, changePrincipal := principalOf(req.policyPrincipal, &invalid)
	if err := invalid.err(); err != nil {
		return nil, err
	}
	var principal catalog.Principal
	if changePrincipal {
		if principal, err = s.resolvePolicyPrincipal(field, principalID, policy.OrganizationID); err != nil {
			return nil, err
		}
		kind = principal.Kind
	}

	var updated catalog.Policy
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Policy(policy.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourcePolicy, policy.ID)
		}
		if err != nil {
			return err
		}
		if req.Name != nil {
			current.Name = *req.Name
		}
		if req.Description != nil {
			current.Description = *req.Description
		}
		if req.Tags != nil {
			current.Tags = *req.Tags
		}
		if changePrincipal {
			current.PrincipalID = principal.ID
		}
		current.UpdatedAt = recordTime()
		updated = current
		return tx.PutPolicy(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("policy updated", "policy_id", policy.ID, "bearer_id", updated.PrincipalID, "principal_id", call.principal().ID)
	return toPolicyJSON(updated, kind), nil
}

// deletePolicy handles DELETE /policies/{policy_id}.
func (s *server) deletePolicy(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	policy, _, err := s.findPolicy(r.PathValue("policy_id"), "policy_id")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, policy.OrganizationID, auth.ActionIAMManage, permissionPolicy, actionDelete); err != nil {
		return nil, err
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		err := tx.DeletePolicy(policy.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourcePolicy, policy.ID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("policy deleted", "policy_id", policy.ID, "principal_id", call.principal().ID)
	return noContent{}, nil
}

// listPolicies handles GET /policies. The principal filters combine: a
// policy matches when its principal is in any of user_ids and
// application_ids. Policies are never attached to groups, so a group_ids
// filter matches none.
func (s *server) listPolicies(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(policyOrders)
	editable := p.boolean("editable")
	noPrincipal := p.boolean("no_principal")
	userIDs := p.uuids("user_ids")
	applicationIDs := p.uuids("application_ids")
	groupIDs := p.uuids("group_ids")
	policyIDs := p.uuids("policy_ids")
	if err := p.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionPolicy, actionList)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMRead, permissionPolicy, actionList); err != nil {
		return nil, err
	}

	name, tag := values.Get("policy_name"), values.Get("tag")
	principalFilter := len(userIDs) > 0 || len(applicationIDs) > 0 || len(groupIDs) > 0
	var policies []catalog.Policy
	kinds := map[string]catalog.PrincipalKind{}
	err = s.cat.View(func(tx *catalog.Tx) error {
		principals, err := tx.Principals(func(p *catalog.Principal) bool { return p.OrganizationID == organizationID })
		if err != nil {
			return err
		}
		for _, p := range principals {
			kinds[p.ID] = p.Kind
		}
		policies, err = tx.Policies(func(policy *catalog.Policy) bool {
			kind := kinds[policy.PrincipalID]
			matchesPrincipal := !principalFilter ||
				(kind == catalog.PrincipalUser && slices.Contains(userIDs, policy.PrincipalID)) ||
				(kind == catalog.PrincipalApplication && slices.Contains(applicationIDs, policy.PrincipalID))
			return policy.OrganizationID == organizationID &&
				(editable == nil || *editable) &&
				(noPrincipal == nil || (policy.PrincipalID == "") == *noPrincipal) &&
				matchesPrincipal &&
				strings.Contains(policy.Name, name) &&
				containsTag(policy.Tags, tag) &&
				(len(policyIDs) == 0 || slices.Contains(policyIDs, policy.ID))
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	sortPolicies(policies, paging.orderBy)

	resp := listPoliciesResponse{Policies: []policyJSON{}, TotalCount: clampUint32(len(policies))}
	for _, policy := range paginate(policies, paging) {
		resp.Policies = append(resp.Policies, toPolicyJSON(policy, kinds[policy.PrincipalID]))
	}
	return resp, nil
}

// sortPolicies orders policies, which the catalog returns oldest first.
func sortPolicies(policies []catalog.Policy, orderBy string) {
	key := func(a, b catalog.Policy) int { return a.CreatedAt.Compare(b.CreatedAt) }
	if strings.HasPrefix(orderBy, "policy_name") {
		key = func(a, b catalog.Policy) int { return cmp.Compare(a.Name, b.Name) }
	}
	slices.SortStableFunc(policies, func(a, b catalog.Policy) int { return ascending(orderBy, key(a, b)) })
}

// findPolicy checks a policy ID sent in the field named field and reads the
// policy and the kind of its principal.
func (s *server) findPolicy(rawID, field string) (catalog.Policy, catalog.PrincipalKind, error) {
	if rawID == "" {
		return catalog.Policy{}, "", invalidArgument(field, reasonRequired, fmt.Sprintf("set %s to the UUID of a policy", field))
	}
	if !auth.ValidUUID(rawID) {
		return catalog.Policy{}, "", invalidArgument(field, reasonFormat, fmt.Sprintf("%s %q is not a UUID", field, rawID))
	}
	id := strings.ToLower(rawID)
	var policy catalog.Policy
	var kind catalog.PrincipalKind
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		if policy, err = tx.Policy(id); err != nil {
			return err
		}
		if policy.PrincipalID == "" {
			return nil
		}
		principal, err := tx.Principal(policy.PrincipalID)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		kind = principal.Kind
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Policy{}, "", notFound(resourcePolicy, id)
	}
	return policy, kind, err
}

// listRules handles GET /rules, the rules of one policy. The SDK always
// sends policy_id.
func (s *server) listRules(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(nil)
	if err := p.err(); err != nil {
		return nil, err
	}
	policy, _, err := s.findPolicy(values.Get("policy_id"), "policy_id")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, policy.OrganizationID, auth.ActionIAMRead, permissionPolicy, actionRead); err != nil {
		return nil, err
	}
	resp := listRulesResponse{Rules: []ruleJSON{}, TotalCount: clampUint32(len(policy.Rules))}
	for _, rule := range paginate(policy.Rules, paging) {
		resp.Rules = append(resp.Rules, toRuleJSON(rule))
	}
	return resp, nil
}

// setRules handles PUT /rules, which replaces every rule of a policy.
func (s *server) setRules(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req setRulesRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	policy, _, err := s.findPolicy(req.PolicyID, "policy_id")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, policy.OrganizationID, auth.ActionIAMManage, permissionPolicy, actionWrite); err != nil {
		return nil, err
	}

	var invalid argumentErrors
	rules := parseRules(req.Rules, policy.OrganizationID, &invalid)
	if err := invalid.err(); err != nil {
		return nil, err
	}

	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Policy(policy.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourcePolicy, policy.ID)
		}
		if err != nil {
			return err
		}
		if err := checkRuleProjects(tx, rules, policy.OrganizationID); err != nil {
			return err
		}
		current.Rules = rules
		current.UpdatedAt = recordTime()
		return tx.PutPolicy(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("policy rules set", "policy_id", policy.ID, "rules", len(rules), "principal_id", call.principal().ID)

	resp := setRulesResponse{Rules: []ruleJSON{}}
	for _, rule := range rules {
		resp.Rules = append(resp.Rules, toRuleJSON(rule))
	}
	return resp, nil
}
