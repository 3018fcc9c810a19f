import { Storage } from "@durable-object/core"
import { storageConformance } from "./storageConformance.ts"

storageConformance("memory", () => Storage.layerMemory)
