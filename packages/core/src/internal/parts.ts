/**
 * What the pieces of one object type's runtime share: built once by `runtime.ts` and handed to the call path,
 * the lifecycle and the alarm runner.
 *
 * @internal
 */
import type { Clock } from "effect"
import type { FiredAlarm } from "../Alarms.ts"
import type { InvalidObjectId } from "../Errors.ts"
import type { Commits, OwnStorage } from "./commit.ts"
import type { Cell } from "./context.ts"
import type { DefinitionSpec, ObjectContext } from "./definition.ts"
import type { Registry } from "./instance.ts"
import type { Live } from "./live.ts"
import type { UserCode } from "./userCode.ts"

export interface RuntimeParts {
  readonly def: DefinitionSpec
  readonly registry: Registry
  readonly commits: Commits
  /** Storage, with its work in the runtime's own context. */
  readonly own: OwnStorage
  readonly user: UserCode
  /** The subscribers of this type's objects (live state). */
  readonly live: Live
  readonly clock: Clock.Clock
  /** The context a handler, hook or alarm of object `id` gets, over its working `cell`. */
  readonly makeContext: (id: string, cell: Cell, alarm?: FiredAlarm | undefined) => ObjectContext<unknown, any>
  /** `InvalidObjectId` when `id` cannot name an object of this type. */
  readonly checkId: (id: string) => InvalidObjectId | undefined
}
