import { ReactWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import { Poll } from '@lumino/polling';

/**
 * A main-area widget that refreshes itself from the server while it is shown:
 * polls every 2 s (backing off on errors), stands by when hidden, stops when disposed.
 */
export abstract class PollingWidget extends ReactWidget {
  constructor(name: string) {
    super();
    this.poll = new Poll({
      auto: false,
      factory: () => this.fetch(),
      frequency: { interval: 2000, backoff: true, max: 30000 },
      name,
      standby: 'when-hidden'
    });
  }

  /** Read the server's state and re-render. */
  protected abstract fetch(): Promise<void>;

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.poll.start();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    void this.poll.start();
  }

  protected onBeforeHide(msg: Message): void {
    void this.poll.stop();
    super.onBeforeHide(msg);
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  private poll: Poll;
}
