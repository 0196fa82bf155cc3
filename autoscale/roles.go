package autoscale

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// PostgreSQL roles in every instance. A principal's backend connection logs
// in as the role of its strongest permission set, so current_user names
// that role and row-level security policies can target it. No principal's
// role is a superuser, owns the database or the public schema, may create
// roles or databases, may replicate, may bypass row-level security or may
// create temporary objects.
const (
	// OwnerRole owns the database and its public schema. It cannot log in,
	// so no principal owns anything shared.
	OwnerRole = "sdb_owner"
	// RoleAdmin is the role of the FullAccess and ReadWrite permission
	// sets: data and table structure in the public schema. It owns every
	// table a principal creates.
	RoleAdmin = "role_admin"
	// RoleReadWrite is the role of DataReadWrite: SELECT, INSERT, UPDATE
	// and DELETE on RoleAdmin's tables and USAGE and SELECT on its
	// sequences, with no structure changes.
	RoleReadWrite = "role_readwrite"
	// RoleReadOnly is the role of ReadOnly: SELECT on RoleAdmin's tables
	// and sequences.
	RoleReadOnly = "role_readonly"
)

// principalRoles are the roles principals log in as, strongest first.
var principalRoles = []string{RoleAdmin, RoleReadWrite, RoleReadOnly}

// bootstrapStep is one version of the SQL that sets an instance up. The
// superuser runs each step in one transaction, connected to the instance's
// database. Provisioning runs every step on a new instance, and a wake runs
// the steps newer than the instance's bootstrap version (see upgrade.go).
type bootstrapStep struct {
	version int
	summary string
	// statements returns the step's SQL for the database dbName.
	statements func(dbName string) []string
}

// bootstrapSteps are in version order, starting at 1 with no gap. Append
// new steps and never edit a released one, because instances that already
// ran it will not run it again. Every step after the first must be safe to
// run twice: a wake that fails between a step's commit and the marker write
// runs the step again.
var bootstrapSteps = []bootstrapStep{
	{version: 1, summary: "owner role, role_admin and database privileges", statements: ownerAndAdminSQL},
	{version: 2, summary: "roles for the DataReadWrite and ReadOnly permission sets", statements: permissionSetRolesSQL},
	{version: 3, summary: "event trigger rejecting privilege commands, SECURITY LABEL and CREATE SUBSCRIPTION", statements: rejectCommandsSQL},
	{version: 4, summary: "CREATE on the database for role_admin, for trusted extensions and schemas", statements: extensionsSQL},
}

// extensionsSQL lets role_admin run CREATE EXTENSION for the extensions
// PostgreSQL marks trusted (pgcrypto, hstore, citext, uuid-ossp and
// others), which needs CREATE on the database, as the real service lets
// users install extensions. The same right allows CREATE SCHEMA.
func extensionsSQL(dbName string) []string {
	return []string{"GRANT CREATE ON DATABASE " + pgx.Identifier{dbName}.Sanitize() + " TO " + RoleAdmin}
}

// latestBootstrapVersion is the version a fully set-up instance has.
func latestBootstrapVersion() int {
	return bootstrapSteps[len(bootstrapSteps)-1].version
}

// ownerAndAdminSQL makes the internal owner role own the database and its
// public schema, and lets role_admin connect and create tables in public.
// It revokes PUBLIC's default rights, CONNECT, TEMP and CREATE on public,
// so temporary tables are rejected as in the real service. Nobody but the
// superuser reaches the postgres and template1 databases.
func ownerAndAdminSQL(dbName string) []string {
	db := pgx.Identifier{dbName}.Sanitize()
	return []string{
		"CREATE ROLE " + OwnerRole + " NOLOGIN",
		"CREATE ROLE " + RoleAdmin + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
		"ALTER DATABASE " + db + " OWNER TO " + OwnerRole,
		"REVOKE ALL ON DATABASE " + db + " FROM PUBLIC",
		"GRANT CONNECT ON DATABASE " + db + " TO " + RoleAdmin,
		"ALTER SCHEMA public OWNER TO " + OwnerRole,
		"REVOKE ALL ON SCHEMA public FROM PUBLIC",
		"GRANT USAGE, CREATE ON SCHEMA public TO " + RoleAdmin,
		"REVOKE ALL ON DATABASE postgres FROM PUBLIC",
		"REVOKE ALL ON DATABASE template1 FROM PUBLIC",
	}
}

// permissionSetRolesSQL creates role_readwrite and role_readonly and gives
// them the rights of their permission sets on role_admin's tables and
// sequences: those that exist now through GRANT ... ON ALL, and later ones
// through default privileges. SELECT on sequences lets both roles read a
// sequence's state, which pg_dump needs.
//
// Each stronger role is also a member of each weaker one, and every
// principal role is NOINHERIT. In PostgreSQL 14 a role that is its
// connection's session user may grant its own membership to any role
// (is_admin_of_role), so a role_admin session could run GRANT role_admin
// TO role_readwrite, and event triggers do not see role statements.
// PostgreSQL rejects a grant that would make a membership loop, so with
// role_admin a member of role_readwrite that grant fails with "role
// "role_admin" is a member of role "role_readwrite"". Because of NOINHERIT
// the memberships give no privileges, and row-level security policies for
// a weaker role do not apply to a stronger one. They only allow SET ROLE
// to a weaker role.
//
// NOTE: the weaker role's own session may revoke that membership (REVOKE
// role_readwrite FROM role_admin), after which a role_admin session can
// grant role_admin to role_readwrite. Nothing inside PostgreSQL 14 can
// stop this, because both are self-administration of a session user.
func permissionSetRolesSQL(dbName string) []string {
	db := pgx.Identifier{dbName}.Sanitize()
	var statements []string
	for _, role := range []string{RoleReadWrite, RoleReadOnly} {
		statements = append(statements, fmt.Sprintf(
			"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s; END IF; END $$",
			role, role))
	}
	for _, role := range principalRoles {
		statements = append(statements,
			"ALTER ROLE "+role+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT")
	}
	statements = append(statements,
		"GRANT "+RoleReadOnly+" TO "+RoleReadWrite,
		"GRANT "+RoleReadWrite+", "+RoleReadOnly+" TO "+RoleAdmin,
		"GRANT CONNECT ON DATABASE "+db+" TO "+RoleReadWrite+", "+RoleReadOnly,
		"GRANT USAGE ON SCHEMA public TO "+RoleReadWrite+", "+RoleReadOnly,
	)
	grants := []struct{ privileges, objects, role string }{
		{"SELECT, INSERT, UPDATE, DELETE", "TABLES", RoleReadWrite},
		{"USAGE, SELECT", "SEQUENCES", RoleReadWrite},
		{"SELECT", "TABLES", RoleReadOnly},
		{"SELECT", "SEQUENCES", RoleReadOnly},
	}
	for _, g := range grants {
		statements = append(statements,
			"GRANT "+g.privileges+" ON ALL "+g.objects+" IN SCHEMA public TO "+g.role,
			"ALTER DEFAULT PRIVILEGES FOR ROLE "+RoleAdmin+" GRANT "+g.privileges+" ON "+g.objects+" TO "+g.role)
	}
	return statements
}

// rejectTriggerName and rejectFunctionName name the event trigger, and the
// function it runs, that reject for every non-superuser the commands the
// real service rejects while PostgreSQL would allow them or reject them
// with another message.
const (
	rejectTriggerName  = "sdblocal_reject_command"
	rejectFunctionName = "sdblocal.reject_command()"
)

// rejectCommandTags are the command tags the event trigger fires on, at
// ddl_command_start. Event triggers do not fire for commands on shared
// objects, so GRANT and REVOKE fire only for objects inside the database.
//
// NOTE: GRANT and REVOKE on databases and tablespaces pass the trigger but
// change nothing, because the principal roles own none of them (PostgreSQL
// warns "no privileges were granted"). Role memberships pass it too (see
// permissionSetRolesSQL), and so does ALTER ROLE on the session's own role:
// a role may still set its own parameters (ALTER ROLE ... SET) and password.
var rejectCommandTags = []string{
	"GRANT", "REVOKE", "ALTER DEFAULT PRIVILEGES", "SECURITY LABEL",
	"CREATE SUBSCRIPTION", "REFRESH MATERIALIZED VIEW",
}

// rejectCommandFunction is the event trigger function. It runs as the
// session's user with a fixed search_path, so a principal's own functions
// and operators cannot change its checks.
//
// REFRESH MATERIALIZED VIEW CONCURRENTLY already fails for every principal
// role, because the refresh builds its diff in a temporary table and the
// roles lack TEMP ("permission denied to create temporary tables"). The
// function only replaces that message with the real service's. An event
// trigger cannot see a statement's options, so it reads the client's query
// text and replaces the message only when every REFRESH in that text is
// CONCURRENTLY; a plain REFRESH is never rejected by it.
const rejectCommandFunction = `CREATE OR REPLACE FUNCTION ` + rejectFunctionName + ` RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  all_concurrent boolean;
  view_name text;
BEGIN
  IF current_setting('is_superuser') = 'on' THEN
    RETURN;
  END IF;
  CASE tg_tag
  WHEN 'CREATE SUBSCRIPTION' THEN
    RAISE EXCEPTION 'permission denied to create subscription'
      USING ERRCODE = 'insufficient_privilege';
  WHEN 'SECURITY LABEL' THEN
    RAISE EXCEPTION 'permission denied to run SECURITY LABEL'
      USING ERRCODE = 'insufficient_privilege';
  WHEN 'REFRESH MATERIALIZED VIEW' THEN
    SELECT bool_and(m.match[1] IS NOT NULL), (array_agg(m.match[2] ORDER BY m.n))[1]
      INTO all_concurrent, view_name
      FROM regexp_matches(current_query(),
        'refresh\s+materialized\s+view\s+(concurrently\s+)?(?:(?:"(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*)\s*\.\s*)*("(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*)',
        'gi') WITH ORDINALITY AS m(match, n);
    IF all_concurrent THEN
      IF left(view_name, 1) = '"' THEN
        view_name := replace(substr(view_name, 2, length(view_name) - 2), '""', '"');
      ELSE
        view_name := lower(view_name);
      END IF;
      RAISE EXCEPTION 'cannot refresh materialized view "%" concurrently', view_name
        USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
  ELSE
    RAISE EXCEPTION 'permission denied to run %', tg_tag
      USING ERRCODE = 'insufficient_privilege',
        HINT = 'SQL privileges follow each principal''s IAM permission sets; change the principal''s policy instead.';
  END CASE;
END
$fn$`

// rejectCommandsSQL installs the event trigger in a schema only the
// superuser can use. The schema, the function and the trigger become
// members of the plpgsql extension, which every database has, because
// pg_dump skips extension members: a principal's dump restored into
// another database would otherwise fail on CREATE EVENT TRIGGER, which
// needs a superuser. The statements check before they create, so the step
// can run twice.
func rejectCommandsSQL(string) []string {
	tags := make([]string, len(rejectCommandTags))
	for i, tag := range rejectCommandTags {
		tags[i] = "'" + tag + "'"
	}
	return []string{
		"CREATE SCHEMA IF NOT EXISTS sdblocal",
		"REVOKE ALL ON SCHEMA sdblocal FROM PUBLIC",
		rejectCommandFunction,
		"REVOKE ALL ON FUNCTION " + rejectFunctionName + " FROM PUBLIC",
		fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = '%[1]s') THEN
    CREATE EVENT TRIGGER %[1]s ON ddl_command_start
      WHEN TAG IN (%[2]s)
      EXECUTE FUNCTION %[3]s;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_depend WHERE classid = 'pg_catalog.pg_namespace'::regclass
      AND objid = 'sdblocal'::regnamespace AND deptype = 'e') THEN
    ALTER EXTENSION plpgsql ADD SCHEMA sdblocal;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_depend WHERE classid = 'pg_catalog.pg_proc'::regclass
      AND objid = '%[3]s'::regprocedure AND deptype = 'e') THEN
    ALTER EXTENSION plpgsql ADD FUNCTION %[3]s;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_event_trigger t ON t.oid = d.objid
      WHERE d.classid = 'pg_catalog.pg_event_trigger'::regclass AND t.evtname = '%[1]s' AND d.deptype = 'e') THEN
    ALTER EXTENSION plpgsql ADD EVENT TRIGGER %[1]s;
  END IF;
END $$`, rejectTriggerName, strings.Join(tags, ", "), rejectFunctionName),
	}
}
