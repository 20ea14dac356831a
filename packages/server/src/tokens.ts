// Tokens (seed 5, DESIGN 9): the rules and the table live in @kk/control; the server reads the
// token's row on every request, so a revocation through any instance applies to the next request.
export {
  PERMISSIONS,
  type Permission,
  type Scope,
  type TokenRecord,
  type Principal,
  type MintRequest,
  parseScope,
  formatScope,
  parsePermissions,
  scopeCovers,
  scopeContains,
  hasPermission,
  may,
  publicToken,
  Tokens as TokenService,
} from '@kk/control';
