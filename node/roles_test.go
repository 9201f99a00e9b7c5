package node_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/node"
)

func TestParseRoles(t *testing.T) {
	tests := []struct {
		in      string
		want    []node.Role
		wantErr string
	}{
		{in: "miner", want: []node.Role{node.RoleMiner}},
		{in: "bootstrap,oracle", want: []node.Role{node.RoleBootstrap, node.RoleOracle}},
		{in: " router , miner ", want: []node.Role{node.RoleRouter, node.RoleMiner}},
		{in: "bootstrap,miner,oracle,router", want: node.AllRoles},
		{in: "miner,", want: []node.Role{node.RoleMiner}},
		{in: "baker", wantErr: `unknown role "baker"`},
		{in: "miner,Miner", wantErr: `unknown role "Miner"`},
		{in: "miner,oracle,miner", wantErr: `"miner" is listed twice`},
		{in: "", wantErr: "at least one"},
		{in: " , ,", wantErr: "at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := node.ParseRoles(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseRoles(%q) = %v, nil; want error %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "roles:") {
					t.Errorf("ParseRoles(%q) error = %q, want roles: ... %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoles(%q) = %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseRoles(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestUnknownRoleErrorListsKnownRoles(t *testing.T) {
	err := node.ValidateRoles([]node.Role{"baker"})
	if err == nil {
		t.Fatal("ValidateRoles accepted an unknown role")
	}
	for _, r := range node.AllRoles {
		if !strings.Contains(err.Error(), string(r)) {
			t.Errorf("error %q does not list %s", err, r)
		}
	}
}

func TestHasRole(t *testing.T) {
	roles := []node.Role{node.RoleBootstrap, node.RoleOracle}
	for _, r := range node.AllRoles {
		want := r == node.RoleBootstrap || r == node.RoleOracle
		if got := node.HasRole(roles, r); got != want {
			t.Errorf("HasRole(%v, %s) = %v, want %v", roles, r, got, want)
		}
	}
	if node.HasRole(nil, node.RoleMiner) {
		t.Error("HasRole(nil, miner) = true")
	}
}
