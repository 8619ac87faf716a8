-- Shared prelude: operator ownership of an account (README "Operator ownership").
-- An account's 'op' field names the operator it belongs to. An account without
-- one (created before ownership existed) belongs to `implied`: the only
-- configured operator, or '' (nobody: refused to every operator) when several are.
local function owned_by(owner, operator, implied)
  if not owner or owner == '' then owner = implied end
  return owner ~= '' and owner == operator
end
