/**
 * listenTo adds a listener to a list of them and returns what takes it out again (a listener
 * added twice is taken out once per call).
 */
export function listenTo<L>(listeners: L[], listener: L): () => void {
  listeners.push(listener);
  return () => {
    const at = listeners.indexOf(listener);
    if (at >= 0) listeners.splice(at, 1);
  };
}
