import { Storage } from "@durable-object/core"
import { alarmConformance } from "./alarmConformance.ts"
import { storageConformance } from "./storageConformance.ts"

storageConformance("memory", () => Storage.layerMemory)
alarmConformance("memory", () => Storage.layerMemory)
