package node

import (
	"fmt"
	"slices"
	"strings"
)

// Role is a job a node does in the network; one node may hold several.
type Role string

// The roles of DESIGN.md.
const (
	RoleBootstrap Role = "bootstrap" // a well-known DHT server and gossip relay
	RoleMiner     Role = "miner"     // runs inference; the candidate ephemeral node
	RoleOracle    Role = "oracle"    // validates miners and signs attestations
	RoleRouter    Role = "router"    // reserves miners for user sessions
)

// AllRoles lists the roles in their canonical order.
var AllRoles = []Role{RoleBootstrap, RoleMiner, RoleOracle, RoleRouter}

// ParseRoles reads a comma-separated role list such as "bootstrap,oracle".
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		out = append(out, Role(part))
	}
	return out, ValidateRoles(out)
}

// ValidateRoles rejects an empty list, an unknown role or a repeated one.
func ValidateRoles(roles []Role) error {
	if len(roles) == 0 {
		return fmt.Errorf("roles: at least one of %s is needed", roleList())
	}
	for i, r := range roles {
		if !slices.Contains(AllRoles, r) {
			return fmt.Errorf("roles: unknown role %q (known: %s)", r, roleList())
		}
		if slices.Contains(roles[:i], r) {
			return fmt.Errorf("roles: %q is listed twice", r)
		}
	}
	return nil
}

func roleList() string {
	names := make([]string, len(AllRoles))
	for i, r := range AllRoles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// HasRole reports whether roles holds r.
func HasRole(roles []Role, r Role) bool { return slices.Contains(roles, r) }
